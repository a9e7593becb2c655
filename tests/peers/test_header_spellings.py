"""Header names in every spelling Rack reads, through a real Envoy that lets headers with
underscores through (Envoy's and Istio's default) in front of a real Rack server (thin) and
real Redmine 5.0.4. Rack reads `X_Auth_User_Id`, `x-auth_user-id` and `X-Auth-User-Id` as
the one variable HTTP_X_AUTH_USER_ID and keeps the last: no spelling may carry an identity
the gate did not give, or a credential the gate did not judge.
"""

from __future__ import annotations

import json

import pytest

from peerlib import basic, http_request

MARK = "spoofed-by-client"

# Identity headers under the prefix, in spellings a Rack server folds together, including the
# ones the gate sets on no request of this test.
SPOOFED = [
    ("X_Auth_User_Id", MARK),
    ("x-auth_user-login", MARK),
    ("X-AUTH-USER_ADMIN", MARK),
    ("x_auth_method", MARK),
    ("X_Auth_Impersonator", MARK),
    ("x_auth_oauth_scopes", MARK),
    ("X-Auth_OAuth-Application_Id", MARK),
    ("x_auth_anything", MARK),
]


@pytest.fixture(scope="module")
def envoy_rack(envoy_pool, authz, rack_upstream):
    """Envoy, underscores allowed, gated by the demo-database service, in front of thin."""
    return envoy_pool.get(authz.port, False, rack_upstream.port, underscores=True)


@pytest.fixture(scope="module")
def envoy_example(envoy_pool, authz, rack_upstream):
    """deploy/envoy/envoy.yaml as shipped: headers with underscores are refused."""
    return envoy_pool.get(authz.port, False, rack_upstream.port)


def rack_env(response) -> dict:
    """The Rack environment thin built; fails when the answer did not come from it."""
    assert response.status == 200, (response.status, response.headers, response.body[:300])
    env = json.loads(response.body)
    assert env.get("upstream") == "rack", env
    return env


def assert_no_spoofed_value(env):
    leaked = {k: v for k, v in env.items() if MARK in str(v)}
    assert not leaked, f"client-sent identity reached the upstream: {leaked}"


@pytest.mark.parametrize(
    "method,target,credential",
    [
        pytest.param("GET", "/users/current.json", "alice", id="allowed"),
        pytest.param("GET", "/projects.json", None, id="anonymous-public"),
        pytest.param("GET", "/my/page", None, id="not-gated-web-ui"),
        pytest.param("POST", "/oauth/token", None, id="oauth"),
    ],
)
def test_spoofed_identity_in_any_spelling_never_reaches_rack(envoy_rack, demo_db, method, target, credential):
    headers = list(SPOOFED)
    if credential:
        headers.append(("X-Redmine-API-Key", demo_db.keys[credential]))
    env = rack_env(http_request(envoy_rack.port, method, target, headers, body=b"" if method == "POST" else None))
    assert_no_spoofed_value(env)
    if credential:
        assert env["HTTP_X_AUTH_USER_LOGIN"] == credential
        assert env["HTTP_X_AUTH_USER_ID"] == str(demo_db.ids[credential])
        assert "HTTP_X_AUTH_IMPERSONATOR" not in env
    else:
        assert not [k for k in env if k.startswith("HTTP_X_AUTH_")], env


def test_denied_requests_never_reach_rack(envoy_rack):
    response = http_request(envoy_rack.port, "GET", "/users/current.json",
                            [*SPOOFED, ("X-Redmine-API-Key", "0" * 40)])
    assert response.status == 401, response.body
    assert response.json() == {"errors": ["Invalid API key"]}


def test_a_second_spelling_of_a_credential_is_ambiguous(envoy_rack, demo_db):
    """Rack keeps the last spelling: alice's key then admin's would be admin to Redmine."""
    for first, second in [("X-Redmine-API-Key", "X_Redmine_API_Key"), ("x_redmine_api_key", "X-Redmine-Api-Key")]:
        response = http_request(envoy_rack.port, "GET", "/users/current.json",
                                [(first, demo_db.keys["alice"]), (second, demo_db.keys["admin"])])
        assert response.status == 401, (first, second, response.body)
    response = http_request(envoy_rack.port, "GET", "/users/current.json",
                            [("Authorization", basic("alice", demo_db.passwords["alice"])),
                             ("authorization", basic("admin", demo_db.passwords["admin"]))])
    assert response.status == 401


def test_an_underscore_spelling_authenticates_as_the_dash_one(envoy_rack, demo_db):
    env = rack_env(http_request(envoy_rack.port, "GET", "/users/current.json",
                                [("X_Redmine_API_Key", demo_db.keys["alice"])]))
    assert env["HTTP_X_AUTH_USER_LOGIN"] == "alice"
    assert env["HTTP_X_REDMINE_API_KEY"] == demo_db.keys["alice"], "Redmine reads it too"


def test_a_non_admins_switch_header_never_reaches_rack(envoy_rack, demo_db):
    for spelling in ["X_Redmine_Switch_User", "x-redmine_switch-user", "X-Redmine-Switch-User"]:
        env = rack_env(http_request(envoy_rack.port, "GET", "/users/current.json",
                                    [("X-Redmine-API-Key", demo_db.keys["alice"]), (spelling, "admin")]))
        assert env["HTTP_X_AUTH_USER_LOGIN"] == "alice"
        assert "HTTP_X_REDMINE_SWITCH_USER" not in env, spelling


def test_an_admins_switch_in_two_spellings_is_refused(envoy_rack, demo_db):
    response = http_request(envoy_rack.port, "GET", "/users/current.json",
                            [("X-Redmine-API-Key", demo_db.keys["admin"]),
                             ("X-Redmine-Switch-User", "alice"), ("X_Redmine_Switch_User", "bob")])
    assert response.status == 412, response.body
    env = rack_env(http_request(envoy_rack.port, "GET", "/users/current.json",
                                [("X-Redmine-API-Key", demo_db.keys["admin"]), ("X_Redmine_Switch_User", "alice")]))
    assert (env["HTTP_X_AUTH_USER_LOGIN"], env["HTTP_X_AUTH_IMPERSONATOR"]) == ("alice", "admin")


def test_the_example_refuses_underscore_headers(envoy_example, demo_db):
    for name in ["X_Auth_User_Id", "X_Redmine_API_Key", "x-redmine_switch-user"]:
        response = http_request(envoy_example.port, "GET", "/users/current.json",
                                [("X-Redmine-API-Key", demo_db.keys["alice"]), (name, "1")])
        assert response.status == 400, (name, response.status)
    env = rack_env(http_request(envoy_example.port, "GET", "/users/current.json",
                                [("X-Redmine-API-Key", demo_db.keys["alice"])]))
    assert env["HTTP_X_AUTH_USER_LOGIN"] == "alice"


# --------------------------------------------------------------------------- --strip-credentials


@pytest.fixture(scope="module")
def envoy_stripping(envoy_pool, demo_db, start_authz, rack_upstream):
    stripping = start_authz(demo_db.url, "strip", extra=("--strip-credentials",))
    return envoy_pool.get(stripping.port, False, rack_upstream.port, underscores=True)


@pytest.mark.parametrize("query", ["key={key}", "%6Bey={key}", "k%65y={key}", "%6b%65%79={key}&x=1"])
def test_strip_credentials_removes_a_key_parameter_however_its_name_is_encoded(envoy_stripping, demo_db, query):
    target = "/users/current.json?" + query.format(key=demo_db.keys["alice"])
    env = rack_env(http_request(envoy_stripping.port, "GET", target))
    assert env["HTTP_X_AUTH_USER_LOGIN"] == "alice"
    assert demo_db.keys["alice"] not in env["QUERY_STRING"], env["QUERY_STRING"]


def test_strip_credentials_removes_a_bearer_parameter_however_its_name_is_encoded(envoy_stripping, demo_db):
    for name in ["access_token", "access%5Ftoken", "bearer%5ftoken"]:
        env = rack_env(http_request(envoy_stripping.port, "GET",
                                    f"/users/current.json?{name}={demo_db.oauth_token}"))
        assert env["HTTP_X_AUTH_METHOD"] == "oauth2", name
        assert demo_db.oauth_token not in json.dumps(env), name


def test_strip_credentials_removes_credential_headers_in_every_spelling(envoy_stripping, demo_db):
    env = rack_env(http_request(envoy_stripping.port, "GET", "/users/current.json",
                                [("X_Redmine_API_Key", demo_db.keys["alice"])]))
    assert env["HTTP_X_AUTH_USER_LOGIN"] == "alice"
    assert "HTTP_X_REDMINE_API_KEY" not in env
    env = rack_env(http_request(envoy_stripping.port, "GET", "/users/current.json",
                                [("Authorization", basic("alice", demo_db.passwords["alice"]))]))
    assert env["HTTP_X_AUTH_USER_LOGIN"] == "alice"
    assert "HTTP_AUTHORIZATION" not in env


# --------------------------------------------------------------------------- real Redmine


@pytest.fixture(scope="module")
def envoy_redmine(envoy_pool, authz_oracle, oracle):
    """Envoy, underscores allowed, gated by the service on Redmine's own database, in front
    of Redmine 5.0.4 itself."""
    return envoy_pool.get(authz_oracle.port, False, oracle.port, underscores=True)


def redmine_login(response) -> str:
    assert response.status == 200, (response.status, response.body[:300])
    return json.loads(response.body)["user"]["login"]


def test_two_spellings_through_envoy_to_redmine(envoy_redmine, oracle):
    keys = [("X-Redmine-API-Key", oracle.creds["ACTIVE_KEY"]), ("X_Redmine_API_Key", oracle.creds["ADMIN_KEY"])]
    # Redmine alone acts as admin, the last spelling; through the gate it never gets there.
    assert redmine_login(http_request(oracle.port, "GET", "/users/current.json", keys)) == "admin"
    response = http_request(envoy_redmine.port, "GET", "/users/current.json", keys)
    assert response.status == 401, response.body[:300]
    assert response.header("server") == "envoy"


def test_underscore_spellings_through_envoy_to_redmine(envoy_redmine, oracle):
    alice = oracle.creds["ACTIVE_KEY"]
    through = http_request(envoy_redmine.port, "GET", "/users/current.json", [("X_Redmine_API_Key", alice)])
    assert redmine_login(through) == "alice"
    switch = [("X-Redmine-API-Key", alice), ("X_Redmine_Switch_User", "admin")]
    assert redmine_login(http_request(envoy_redmine.port, "GET", "/users/current.json", switch)) == "alice"
    admin_switch = [("X-Redmine-API-Key", oracle.creds["ADMIN_KEY"]), ("X_Redmine_Switch_User", "alice")]
    assert redmine_login(http_request(envoy_redmine.port, "GET", "/users/current.json", admin_switch)) == "alice"
