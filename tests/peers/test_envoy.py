"""Real HTTP through a real Envoy (deploy/envoy/envoy.yaml) to an echo upstream, gated by
redmine-authz on the demo database. Every test runs twice: with Envoy's default `headers`
map and with `encode_raw_headers: true` (the `envoy` fixture's two parameters).
"""

from __future__ import annotations

import time

import pytest

from peerlib import basic, free_port, http_request, insert_oauth_token, new_id, wait_until

BASIC_CHALLENGE = 'Basic realm="Redmine API"'
IDENTITY_PREFIX = "x-auth-"


def send(envoy, method, target, headers=(), body=None):
    """Sends one request through Envoy with a fresh x-test-id; returns (response, id)."""
    test_id = new_id()
    response = http_request(envoy.port, method, target, [("x-test-id", test_id), *headers], body=body)
    return response, test_id


def upstream_view(response) -> dict:
    """What the echo upstream received; fails when the answer did not come from it."""
    assert response.status == 200, (response.status, response.headers, response.body[:500])
    payload = response.json()
    assert payload.get("upstream") == "echo", payload
    return payload


def identity_of(payload) -> dict[str, list[str]]:
    return {k: v for k, v in payload["headers"].items() if k.startswith(IDENTITY_PREFIX)}


def expect_identity(payload, user_id, login, admin, method, **extra):
    expected = {
        "x-auth-user-id": [str(user_id)],
        "x-auth-user-login": [login],
        "x-auth-user-admin": ["true" if admin else "false"],
        "x-auth-method": [method],
    }
    expected.update({"x-auth-" + k.replace("_", "-"): [v] for k, v in extra.items()})
    # Exactly one value each: Envoy overwrote, never appended to a spoofed value.
    assert identity_of(payload) == expected


def expect_denied(response, test_id, upstream, status, message, challenge=None, fmt="json"):
    assert response.status == status, (response.status, response.headers, response.body)
    assert test_id not in upstream.seen_ids, "a denied request reached the upstream"
    assert response.header("server") == "envoy"
    if fmt == "json":
        assert response.header("content-type").startswith("application/json"), response.headers
        assert response.json() == {"errors": [message]}
    else:
        assert response.header("content-type").startswith("application/xml"), response.headers
        assert response.body.decode().endswith(f'<errors type="array"><error>{message}</error></errors>')
    assert response.header_all("www-authenticate") == ([challenge] if challenge else [])


# --------------------------------------------------------------------------- allow


def test_allow_api_key_header_reaches_upstream_with_identity(envoy, demo_db, upstream):
    key = demo_db.keys["alice"]
    response, test_id = send(envoy, "GET", "/users/current.json?include=memberships",
                             [("X-Redmine-API-Key", key)])
    payload = upstream_view(response)
    assert test_id in upstream.seen_ids
    assert payload["path"] == "/users/current.json?include=memberships"
    expect_identity(payload, demo_db.ids["alice"], "alice", False, "api-key")
    assert payload["headers"]["x-redmine-api-key"] == [key], "the credential passes on unchanged"


@pytest.mark.parametrize(
    "login, make_headers, target, method",
    [
        ("admin", lambda db: [], "/issues.json?key={admin_key}", "api-key"),
        ("bob", lambda db: [("Authorization", basic("bob", db.passwords["bob"]))], "/issues.xml", "basic-password"),
        ("alice", lambda db: [("Authorization", basic(db.keys["alice"], "x"))], "/issues.json", "basic-api-key"),
        # Gate rule (R-BASIC-6): the API key as the Basic password, any user name.
        ("alice", lambda db: [("Authorization", basic("anyone", db.keys["alice"]))], "/issues.json",
         "basic-api-key"),
        ("tina", lambda db: [("X-Redmine-API-Key", db.keys["tina"])], "/issues.json", "api-key"),
        ("alice", lambda db: [], "/projects/1/issues?format=json&key={alice_key}", "api-key"),
    ],
    ids=["key-param", "basic-password", "basic-key-as-user", "basic-key-as-password", "key-skips-2fa",
         "format-param"],
)
def test_allow_each_credential_kind(envoy, demo_db, upstream, login, make_headers, target, method):
    target = target.format(admin_key=demo_db.keys["admin"], alice_key=demo_db.keys["alice"])
    response, _ = send(envoy, "GET", target, make_headers(demo_db))
    payload = upstream_view(response)
    expect_identity(payload, demo_db.ids[login], login, login == "admin", method)
    assert payload["path"] == target


def test_allow_oauth_bearer(envoy, demo_db, upstream):
    response, _ = send(envoy, "GET", "/issues.json", [("Authorization", f"Bearer {demo_db.oauth_token}")])
    payload = upstream_view(response)
    app_id = demo_db.sql("SELECT id FROM oauth_applications WHERE uid = 'demo-client'")[0][0]
    expect_identity(payload, demo_db.ids["admin"], "admin", True, "oauth2",
                    oauth_scopes="admin view_issues view_project", oauth_application_id=app_id)


def test_switch_user_by_admin(envoy, demo_db, upstream):
    response, _ = send(envoy, "GET", "/users/current.json",
                       [("X-Redmine-API-Key", demo_db.keys["admin"]), ("X-Redmine-Switch-User", "ALICE")])
    payload = upstream_view(response)
    expect_identity(payload, demo_db.ids["alice"], "alice", False, "api-key", impersonator="admin")
    # Redmine upstream switches again itself: it must see the header.
    assert payload["headers"]["x-redmine-switch-user"] == ["ALICE"]


def test_switch_header_of_non_admin_is_ignored_and_removed(envoy, demo_db, upstream):
    response, _ = send(envoy, "GET", "/users/current.json",
                       [("X-Redmine-API-Key", demo_db.keys["alice"]), ("X-Redmine-Switch-User", "admin")])
    payload = upstream_view(response)
    expect_identity(payload, demo_db.ids["alice"], "alice", False, "api-key")
    assert "x-redmine-switch-user" not in payload["headers"]


def test_dynamic_metadata_reaches_envoy_access_log(envoy, demo_db, upstream):
    probe = new_id()
    response, _ = send(envoy, "GET", f"/projects/{probe}/issues.json",
                       [("X-Redmine-API-Key", demo_db.keys["alice"])])
    upstream_view(response)

    def logged():
        return [line for line in envoy.access_log_lines() if probe in (line.get("path") or "")]

    wait_until(lambda: logged(), 10, "the access log line of the probe request", envoy.proc)
    line = logged()[0]
    assert line["status"] == 200
    assert line["authz_login"] == "alice"
    assert line["authz_method"] == "api-key"
    assert line["authz_user_id"] == demo_db.ids["alice"]


def test_credentials_in_the_query_appear_in_no_log(envoy, authz, demo_db, upstream):
    """The example's access log writes the path without its query: `?key=` and
    `?access_token=` are credentials. Neither Envoy's nor the gate's output holds them."""
    probe = new_id()
    for query in [f"key={demo_db.keys['alice']}", f"access_token={demo_db.oauth_token}"]:
        response, _ = send(envoy, "GET", f"/projects/{probe}/issues.json?{query}")
        upstream_view(response)

    def logged():
        return [line for line in envoy.access_log_lines() if probe in (line.get("path") or "")]

    wait_until(lambda: len(logged()) == 2, 10, "the access log lines of both requests", envoy.proc)
    assert [line["path"] for line in logged()] == [f"/projects/{probe}/issues.json"] * 2
    for proc in (envoy.proc, authz.proc):
        for path in (proc.log_path, proc.err_path):
            text = path.read_text(errors="replace")
            for secret in (demo_db.keys["alice"], demo_db.oauth_token):
                assert secret not in text, f"a credential in {path.name}"


# --------------------------------------------------------------------------- deny


def test_deny_no_credential_json_and_xml(envoy, upstream):
    response, test_id = send(envoy, "GET", "/users/current.json")
    expect_denied(response, test_id, upstream, 401, "Authentication required", BASIC_CHALLENGE)
    response, test_id = send(envoy, "GET", "/issues.xml?project_id=1")
    expect_denied(response, test_id, upstream, 401, "Authentication required", BASIC_CHALLENGE, fmt="xml")


@pytest.mark.parametrize(
    "target, make_headers, status, message, challenge, fmt",
    [
        ("/users/current.json", lambda db: [("X-Redmine-API-Key", "0" * 40)], 401, "Invalid API key", None, "json"),
        ("/users/current.xml?key=wrong", lambda db: [], 401, "Invalid API key", None, "xml"),
        ("/users/current.json", lambda db: [("Authorization", basic("alice", "wrong"))], 401,
         "Invalid user name, password or API key", BASIC_CHALLENGE, "json"),
        ("/users/current.json", lambda db: [("X-Redmine-API-Key", db.keys["reggie"])], 401, "Invalid API key",
         None, "json"),
        ("/users/current.json", lambda db: [("Authorization", basic("larry", db.passwords["larry"]))], 401,
         "Invalid user name, password or API key", BASIC_CHALLENGE, "json"),
        ("/users/current.json", lambda db: [("Authorization", basic("tina", db.passwords["tina"]))], 401,
         "HTTP Basic authentication is not allowed. Use API key instead", None, "json"),
        ("/users/current.xml", lambda db: [("Authorization", basic("mona", db.passwords["mona"]))], 403,
         "You must change your password", None, "xml"),
        ("/users/current.json", lambda db: [("X-Redmine-API-Key", db.keys["admin"]),
                                            ("X-Redmine-Switch-User", "reggie")], 412,
         "Invalid X-Redmine-Switch-User header", None, "json"),
        ("/users/current.json", lambda db: [("X-Redmine-API-Key", db.keys["admin"]),
                                            ("X-Redmine-Switch-User", "ghost")], 412,
         "Invalid X-Redmine-Switch-User header", None, "json"),
        ("/users/current.json", lambda db: [("Authorization", "Bearer no-such-token")], 401,
         "Invalid access token", BASIC_CHALLENGE, "json"),
        # A wrong key never falls back to a later credential (R-CRED-1).
        ("/users/current.json?key=wrong", lambda db: [("X-Redmine-API-Key", db.keys["alice"])], 401,
         "Invalid API key", None, "json"),
    ],
    ids=["wrong-header-key", "wrong-param-key-xml", "wrong-basic", "registered-user-key", "locked-user-basic",
         "2fa-basic", "must-change-password", "switch-to-registered", "switch-to-unknown", "unknown-bearer",
         "wrong-key-no-fallback"],
)
def test_deny_statuses(envoy, demo_db, upstream, target, make_headers, status, message, challenge, fmt):
    response, test_id = send(envoy, "GET", target, make_headers(demo_db))
    expect_denied(response, test_id, upstream, status, message, challenge, fmt)


def test_deny_revoked_and_expired_bearer(envoy, demo_db, upstream):
    revoked, expired = "envoy-revoked-" + new_id(), "envoy-expired-" + new_id()
    insert_oauth_token(demo_db.name, revoked, demo_db.ids["admin"], "admin view_issues",
                       revoked_at="now() AT TIME ZONE 'UTC' - interval '5 seconds'")
    insert_oauth_token(demo_db.name, expired, demo_db.ids["admin"], "admin view_issues", expires_in=7200,
                       created_at="now() AT TIME ZONE 'UTC' - interval '3 hours'")
    for token, message in [(revoked, "The access token was revoked"), (expired, "The access token expired")]:
        challenge = f'Bearer realm="Redmine", error="invalid_token", error_description="{message}"'
        response, test_id = send(envoy, "GET", "/issues.json", [("Authorization", f"Bearer {token}")])
        expect_denied(response, test_id, upstream, 401, message, challenge)
        response, test_id = send(envoy, "GET", f"/issues.json?access_token={token}")
        expect_denied(response, test_id, upstream, 401, message, challenge)


def test_repeated_authorization_header_is_denied(envoy, demo_db, upstream):
    """Envoy joins a repeated header with a comma (or passes both in header_map): ambiguous."""
    good = basic("alice", demo_db.passwords["alice"])
    for second in [good, basic("bob", demo_db.passwords["bob"])]:
        response, test_id = send(envoy, "GET", "/users/current.json",
                                 [("Authorization", good), ("Authorization", second)])
        expect_denied(response, test_id, upstream, 401, "Ambiguous credentials: send exactly one")
    response, test_id = send(envoy, "GET", "/users/current.json",
                             [("X-Redmine-API-Key", demo_db.keys["alice"]), ("X-Redmine-API-Key", demo_db.keys["admin"])])
    expect_denied(response, test_id, upstream, 401, "Ambiguous credentials: send exactly one")


def test_rest_api_disabled(envoy, demo_db, upstream):
    def set_rest_api(value):
        demo_db.sql(f"UPDATE settings SET value = '{value}' WHERE name = 'rest_api_enabled'")

    def status_with_key():
        return send(envoy, "GET", "/users/current.json", [("X-Redmine-API-Key", demo_db.keys["alice"])])[0].status

    set_rest_api("0")
    try:
        # The service re-reads settings every second here (--settings-refresh-secs 1).
        wait_until(lambda: status_with_key() == 403, 10, "REST API switch off to be seen")
        for headers in [[("X-Redmine-API-Key", demo_db.keys["alice"])], [],
                        [("Authorization", basic("alice", demo_db.passwords["alice"]))]]:
            response, test_id = send(envoy, "GET", "/users/current.json", headers)
            expect_denied(response, test_id, upstream, 403, "REST API is disabled")
        response, test_id = send(envoy, "GET", "/issues.xml?key=whatever")
        expect_denied(response, test_id, upstream, 403, "REST API is disabled", fmt="xml")
        # The web UI is not gated at all.
        upstream_view(send(envoy, "GET", "/projects")[0])
    finally:
        set_rest_api("1")
        wait_until(lambda: status_with_key() == 200, 10, "REST API switch back on to be seen")


def test_database_unreachable_is_503(envoy_pool, envoy, authz_db_down, upstream):
    down = envoy_pool.get(authz_db_down.port, envoy.raw_headers)
    response, test_id = send(down, "GET", "/users/current.json?key=abc")
    expect_denied(response, test_id, upstream, 503, "Authentication is temporarily unavailable")
    assert int(response.header("retry-after")) > 0
    response, test_id = send(down, "GET", "/issues.xml", [("Authorization", basic("alice", "pw"))])
    expect_denied(response, test_id, upstream, 503, "Authentication is temporarily unavailable", fmt="xml")


def test_authz_unreachable_fails_closed(envoy_pool, envoy, upstream):
    """No redmine-authz at all: failure_mode_allow false, status_on_error 503."""
    nobody = envoy_pool.get(_closed_port(), envoy.raw_headers)
    for target in ["/users/current.json", "/projects"]:
        response, test_id = send(nobody, "GET", target, [("X-Redmine-API-Key", "abc")])
        assert response.status == 503, (response.status, response.body)
        assert test_id not in upstream.seen_ids


_CLOSED = []


def _closed_port() -> int:
    """One port with nothing listening, the same for the whole session."""
    if not _CLOSED:
        _CLOSED.append(free_port())
    return _CLOSED[0]


# --------------------------------------------------------------------------- spoofed identity


SPOOFED = [
    ("X-Auth-User-Id", "1"),
    ("x-auth-user-login", "admin"),
    ("x-auth-user-admin", "true"),
    ("x-auth-method", "api-key"),
    ("x-auth-impersonator", "admin"),
    ("x-auth-oauth-scopes", "admin"),
    ("x-auth-anything-else", "x"),
]


def test_spoofed_identity_overwritten_or_removed_when_allowed(envoy, demo_db, upstream):
    response, _ = send(envoy, "GET", "/users/current.json",
                       [*SPOOFED, ("x-auth-user-login", "root"), ("X-Redmine-API-Key", demo_db.keys["alice"])])
    payload = upstream_view(response)
    expect_identity(payload, demo_db.ids["alice"], "alice", False, "api-key")


def test_spoofed_identity_removed_for_anonymous_public_route(envoy, upstream):
    """/projects.json has redmine_authz_mode=public in envoy.yaml: anonymous passes through."""
    response, _ = send(envoy, "GET", "/projects.json", SPOOFED)
    payload = upstream_view(response)
    assert identity_of(payload) == {}


def test_public_route_checks_credentials_when_present(envoy, demo_db, upstream):
    response, _ = send(envoy, "GET", "/projects.json", [("X-Redmine-API-Key", demo_db.keys["admin"])])
    expect_identity(upstream_view(response), demo_db.ids["admin"], "admin", True, "api-key")
    response, test_id = send(envoy, "GET", "/projects.json", [("Authorization", basic("admin", "wrong"))])
    expect_denied(response, test_id, upstream, 401, "Invalid user name, password or API key", BASIC_CHALLENGE)


def test_web_ui_is_not_gated_and_spoofed_identity_removed(envoy, upstream):
    response, _ = send(envoy, "GET", "/projects?sort=name", [*SPOOFED, ("X-Redmine-API-Key", "wrong")])
    payload = upstream_view(response)
    assert identity_of(payload) == {}
    assert payload["headers"]["x-redmine-api-key"] == ["wrong"], "not gated: Redmine decides"
    # Accept and Content-Type never make an API request (R-GATE-1).
    response, _ = send(envoy, "GET", "/issues", [("Accept", "application/json")])
    upstream_view(response)
    response, _ = send(envoy, "POST", "/login", [("Content-Type", "application/json")], body=b"{}")
    assert upstream_view(response)["method"] == "POST"


def test_oauth_endpoints_are_not_gated(envoy, upstream):
    body = b"grant_type=client_credentials&scope=view_issues"
    response, test_id = send(
        envoy, "POST", "/oauth/token",
        [("Authorization", basic("client-id", "client-secret")),
         ("Content-Type", "application/x-www-form-urlencoded"), *SPOOFED[:6]],
        body=body,
    )
    payload = upstream_view(response)
    assert test_id in upstream.seen_ids
    assert payload["body"] == body.decode()
    assert payload["headers"]["authorization"] == [basic("client-id", "client-secret")]
    # Not gated, but the gate sees the request and removes the identity headers.
    assert identity_of(payload) == {}
    response, _ = send(envoy, "GET", "/oauth/authorize?client_id=x&response_type=code")
    upstream_view(response)


def test_oauth_endpoints_fail_closed_when_authz_is_down(envoy_pool, envoy, upstream):
    """Only the gate removes identity headers in every spelling, so /oauth/ goes through it
    too: with the gate away, Envoy answers 503 there as everywhere."""
    nobody = envoy_pool.get(_closed_port(), envoy.raw_headers)
    response, test_id = send(nobody, "POST", "/oauth/revoke", body=b"token=x")
    assert response.status == 503, (response.status, response.body)
    assert test_id not in upstream.seen_ids


def test_non_utf8_header_value_does_not_break_the_check(envoy, demo_db, upstream):
    response, _ = send(envoy, "GET", "/users/current.json",
                       [("X-Redmine-API-Key", demo_db.keys["alice"]), ("X-Legacy-Note", b"caf\xe9 \xff")])
    payload = upstream_view(response)
    expect_identity(payload, demo_db.ids["alice"], "alice", False, "api-key")


def test_deny_is_fast(envoy, upstream):
    """Envoy's 0.5 s ext_authz timeout is never what answers: the service decides first."""
    started = time.monotonic()
    for _ in range(20):
        response, _ = send(envoy, "GET", "/users/current.json?key=wrong")
        assert response.status == 401
    assert (time.monotonic() - started) / 20 < 0.25


def test_hung_database_is_503_from_the_service_before_envoy_gives_up(envoy_pool, envoy, authz_slow_db, upstream):
    """The database stops answering mid-flight. The service must answer 503 inside Envoy's
    0.5 s deadline (it reads grpc-timeout), so the client gets the service's own 503 body,
    not Envoy's bodiless status_on_error, and never an allow."""
    gate = envoy_pool.get(authz_slow_db.authz.port, envoy.raw_headers)
    upstream_view(send(gate, "GET", "/projects")[0])  # warm: Envoy connected to the service
    authz_slow_db.proxy.freeze()
    try:
        for headers in [[("X-Redmine-API-Key", new_id())], [("Authorization", basic("alice", new_id()))]]:
            started = time.monotonic()
            response, test_id = send(gate, "GET", "/users/current.json", headers)
            elapsed = time.monotonic() - started
            expect_denied(response, test_id, upstream, 503, "Authentication is temporarily unavailable")
            assert response.header("retry-after"), response.headers
            print(f"hung-db 503 after {elapsed:.3f}s")
            assert elapsed < 0.5, f"answered after {elapsed:.2f}s"
        # Not-gated requests need no database.
        upstream_view(send(gate, "GET", "/projects")[0])
    finally:
        authz_slow_db.proxy.thaw()
    wait_until(
        lambda: send(gate, "GET", "/users/current.json?key=" + "0" * 40)[0].status == 401,
        15, "the service to answer from the database again",
    )


@pytest.mark.parametrize(
    "target",
    ["/oauth/../users/current.json", "/oauth/%2E%2E/users/current.json", "/oauth/./../users/current.json",
     "//users/current.json", "/oauth/token/../../users/current.json?format=xml"],
)
def test_crafted_paths_cannot_dodge_the_gate_through_the_oauth_route(envoy, demo_db, upstream, target):
    """envoy.yaml normalises paths before routing: these are API requests, gated like any."""
    response, test_id = send(envoy, "GET", target)
    assert response.status == 401, (response.status, response.body[:200])
    assert test_id not in upstream.seen_ids
    response, _ = send(envoy, "GET", target, [("X-Redmine-API-Key", demo_db.keys["alice"])])
    payload = upstream_view(response)
    assert payload["path"].split("?")[0] == "/users/current.json"
    expect_identity(payload, demo_db.ids["alice"], "alice", False, "api-key")


def test_trailing_slash_api_path_is_gated(envoy, upstream):
    """Redmine (Rails) routes '/issues.json/' to the JSON API like '/issues.json' (see the
    oracle's api-path-* cases). envoy.yaml's path normalisation keeps the trailing slash, so
    the gate must recognise it: anonymous must be denied 401 and never reach Redmine."""
    response, test_id = send(envoy, "GET", "/issues.json/")
    expect_denied(response, test_id, upstream, 401, "Authentication required", BASIC_CHALLENGE)
