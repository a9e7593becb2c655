-- The subset of Redmine's schema (6.1 columns) that redmine-authz reads, for tests and the
-- demo database only. A real deployment points at Redmine's own database and never runs this.
-- IF NOT EXISTS everywhere: `demo-db --force` on an existing Redmine must not clobber tables.

CREATE TABLE IF NOT EXISTS users (
    id serial PRIMARY KEY,
    login varchar(255) NOT NULL DEFAULT '',
    hashed_password varchar(40) NOT NULL DEFAULT '',
    firstname varchar(30) NOT NULL DEFAULT '',
    lastname varchar(255) NOT NULL DEFAULT '',
    admin boolean NOT NULL DEFAULT false,
    status integer NOT NULL DEFAULT 1,
    last_login_on timestamp without time zone,
    language varchar(5) DEFAULT '',
    auth_source_id integer,
    created_on timestamp without time zone,
    updated_on timestamp without time zone,
    type varchar(255),
    mail_notification varchar(255) NOT NULL DEFAULT '',
    salt varchar(64),
    must_change_passwd boolean NOT NULL DEFAULT false,
    passwd_changed_on timestamp without time zone,
    twofa_scheme varchar(255),
    twofa_totp_key varchar(255),
    twofa_totp_last_used_at integer,
    twofa_required boolean DEFAULT false
);
CREATE INDEX IF NOT EXISTS index_users_on_type ON users (type);
CREATE INDEX IF NOT EXISTS index_users_on_auth_source_id ON users (auth_source_id);

CREATE TABLE IF NOT EXISTS tokens (
    id serial PRIMARY KEY,
    user_id integer NOT NULL DEFAULT 0,
    action varchar(30) NOT NULL DEFAULT '',
    value varchar(40) NOT NULL DEFAULT '',
    created_on timestamp without time zone NOT NULL,
    updated_on timestamp without time zone
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_value ON tokens (value);
CREATE INDEX IF NOT EXISTS index_tokens_on_user_id ON tokens (user_id);

CREATE TABLE IF NOT EXISTS settings (
    id serial PRIMARY KEY,
    name varchar(255) NOT NULL DEFAULT '',
    value text,
    updated_on timestamp without time zone
);
CREATE INDEX IF NOT EXISTS index_settings_on_name ON settings (name);

-- Doorkeeper's tables as Redmine 6.1 creates them.
CREATE TABLE IF NOT EXISTS oauth_applications (
    id bigserial PRIMARY KEY,
    name varchar NOT NULL,
    uid varchar NOT NULL,
    secret varchar NOT NULL,
    redirect_uri text NOT NULL,
    scopes text NOT NULL DEFAULT '',
    confidential boolean NOT NULL DEFAULT true,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS index_oauth_applications_on_uid ON oauth_applications (uid);

CREATE TABLE IF NOT EXISTS oauth_access_grants (
    id bigserial PRIMARY KEY,
    resource_owner_id bigint NOT NULL,
    application_id bigint NOT NULL REFERENCES oauth_applications (id),
    token varchar NOT NULL,
    expires_in integer NOT NULL,
    redirect_uri text NOT NULL,
    scopes text NOT NULL DEFAULT '',
    created_at timestamp(6) without time zone NOT NULL,
    revoked_at timestamp(6) without time zone,
    code_challenge varchar,
    code_challenge_method varchar
);
CREATE UNIQUE INDEX IF NOT EXISTS index_oauth_access_grants_on_token ON oauth_access_grants (token);

CREATE TABLE IF NOT EXISTS oauth_access_tokens (
    id bigserial PRIMARY KEY,
    resource_owner_id bigint,
    application_id bigint NOT NULL REFERENCES oauth_applications (id),
    token varchar NOT NULL,
    refresh_token varchar,
    expires_in integer,
    scopes varchar,
    created_at timestamp(6) without time zone NOT NULL,
    revoked_at timestamp(6) without time zone,
    previous_refresh_token varchar NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS index_oauth_access_tokens_on_token ON oauth_access_tokens (token);
CREATE UNIQUE INDEX IF NOT EXISTS index_oauth_access_tokens_on_refresh_token ON oauth_access_tokens (refresh_token);
CREATE INDEX IF NOT EXISTS index_oauth_access_tokens_on_resource_owner_id ON oauth_access_tokens (resource_owner_id);
