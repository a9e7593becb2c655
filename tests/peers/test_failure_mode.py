"""A Check the gate cannot read is denied, never turned into an allow (R-NEVER-4, R-DENY-1).

Envoy answers an ext_authz RPC error with `status_on_error` when `failure_mode_allow` is
false, and lets the request through when it is true. So the gate must answer every Check
with a CheckResponse, also one over its size limit (Envoy's `with_request_body` with a
large `max_request_bytes` makes Checks that big) and one it cannot decode (no Envoy sends
that; a raw gRPC client does). Envoy runs here with both settings.
"""

from __future__ import annotations

import json
import urllib.request

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2

from peerlib import CheckCall, http_request, new_id

CHECK = "/envoy.service.auth.v3.Authorization/Check"
MiB = 1024 * 1024
# The largest Check the gate reads (src/envoy/wire.rs, MAX_CHECK_BYTES).
GATE_LIMIT = 4 * MiB
INVALID_ARGUMENT = 3
FAIL_CLOSED = "failure_mode_allow: false"


def envoy_sending_bodies(envoy_pool, authz, fail_open: bool):
    """deploy/envoy/envoy.yaml with `with_request_body` up to 8 MiB, failing closed or open."""
    setting = (
        f"failure_mode_allow: {'true' if fail_open else 'false'}\n"
        "              with_request_body: { max_request_bytes: 8388608 }"
    )
    return envoy_pool.get(authz.port, False, bodies=False, replace=((FAIL_CLOSED, setting),))


@pytest.fixture(params=[False, True], ids=["fail-closed", "fail-open"])
def body_envoy(request, envoy_pool, authz):
    return envoy_sending_bodies(envoy_pool, authz, request.param)


def ext_authz_stats(envoy) -> dict[str, int]:
    """Envoy's own count of ext_authz outcomes: ok, denied, error, failure_mode_allowed."""
    prefix = "http.redmine_ingress.ext_authz."
    text = urllib.request.urlopen(f"http://127.0.0.1:{envoy.admin_port}/stats?filter=ext_authz", timeout=5).read()
    stats = {}
    for line in text.decode().splitlines():
        name, _, value = line.partition(": ")
        if name.startswith(prefix):
            stats[name[len(prefix):]] = int(value)
    return stats


def post(envoy, headers, body: bytes, content_type: str = "application/json"):
    test_id = new_id()
    response = http_request(
        envoy.port, "POST", "/issues.json",
        [("x-test-id", test_id), ("content-type", content_type), *headers],
        body=body,
    )
    return response, test_id


def test_body_over_the_gates_limit_is_denied_413(body_envoy, demo_db, upstream):
    """Envoy forwards a 5 MiB body in the Check: over the gate's limit, so a deny, which
    Envoy honours whether it fails open or closed."""
    body = b"x" * (5 * MiB)
    before = ext_authz_stats(body_envoy)
    for headers in ([], [("X-Redmine-API-Key", demo_db.keys["alice"])]):
        response, test_id = post(body_envoy, headers, body)
        assert test_id not in upstream.seen_ids, ("an unread Check let the request through", response.status)
        assert response.status == 413, (response.status, response.headers, response.body[:300])
        assert response.header("server") == "envoy"
        assert response.json() == {"errors": ["Request too large"]}
    after = ext_authz_stats(body_envoy)
    # Envoy saw two answers, both denies, and no error its failure mode would decide.
    assert after["denied"] - before["denied"] == 2, (before, after)
    assert (after["error"], after["failure_mode_allowed"]) == (before["error"], before["failure_mode_allowed"])


def test_body_under_the_gates_limit_is_decided(body_envoy, demo_db, upstream):
    """Below the limit the body is read and the Check decided as usual. The body is JSON that
    Rails can parse: one it cannot is a 400, as Redmine answers (R-PARAM-6)."""
    body = b'{"x":"' + b"x" * (3 * MiB) + b'"}'
    response, test_id = post(body_envoy, [("X-Redmine-API-Key", demo_db.keys["alice"])], body)
    assert response.status == 200, (response.status, response.body[:300])
    assert test_id in upstream.seen_ids
    assert response.json()["headers"]["x-auth-user-login"] == ["alice"]
    response, test_id = post(body_envoy, [], body)
    assert response.status == 401, (response.status, response.body[:300])
    assert test_id not in upstream.seen_ids


def test_partial_bodies_let_large_uploads_through(envoy_pool, authz, demo_db, upstream):
    """docs/request-bodies.md's advice for uploads larger than the gate's limit: `allow_partial_message`
    (with `max_request_bytes` within Envoy's 1 MiB connection buffer). Envoy sends the first
    1,000,000 bytes of a 5 MiB body; the gate decides, and the whole body goes upstream."""
    partial = (
        "failure_mode_allow: false\n"
        "              with_request_body: { max_request_bytes: 1000000, allow_partial_message: true }"
    )
    envoy = envoy_pool.get(authz.port, False, bodies=False, replace=((FAIL_CLOSED, partial),))
    body = b"x" * (5 * MiB)
    # An upload (a type Rails does not parse): a JSON body cut like this is 413 (test_bodies).
    upload = "application/octet-stream"
    response, test_id = post(envoy, [("X-Redmine-API-Key", demo_db.keys["alice"])], body, upload)
    assert response.status == 200, (response.status, response.body[:300])
    assert response.json()["headers"]["x-auth-user-login"] == ["alice"]
    assert len(response.json()["body"]) == len(body)
    # Denied: Envoy answers 401 as soon as the gate has decided, while the client may still be
    # sending the rest of 5 MiB, and closes the connection; the client may see the reset
    # before it reads the answer. Either way the request never reaches the upstream.
    test_id = new_id()
    try:
        response = http_request(envoy.port, "POST", "/issues.json",
                                [("x-test-id", test_id), ("content-type", upload)], body=body)
        assert response.status == 401, (response.status, response.body[:300])
    except (ConnectionResetError, BrokenPipeError):
        pass
    assert test_id not in upstream.seen_ids


# --------------------------------------------------------------------------- raw gRPC


@pytest.fixture
def raw_check(authz):
    """Check with the request as bytes, exactly as given; the answer as a CheckResponse."""
    channel = grpc.insecure_channel(f"127.0.0.1:{authz.port}")
    call = channel.unary_unary(
        CHECK,
        request_serializer=None,
        response_deserializer=external_auth_pb2.CheckResponse.FromString,
    )
    yield lambda message: call(message, timeout=30)
    channel.close()


VALID = CheckCall(headers=[("x-redmine-api-key", "a" * 40)]).to_proto().SerializeToString()

UNDECODABLE = {
    "bad-varint": b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    "field-zero": b"\x00",
    "attributes-as-varint": b"\x08\x01",
    "length-past-the-end": b"\x0a\x7f\x0a",
    "truncated-check": VALID[: len(VALID) // 2],
    "group-without-end": b"\x0b",
    "nested-groups": b"\x13" * 200,
}


@pytest.mark.parametrize("message", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_undecodable_check_is_a_400_deny_not_an_rpc_error(raw_check, message):
    response = raw_check(message)
    assert response.status.code == INVALID_ARGUMENT, response
    assert response.denied_response.status.code == 400, response
    assert json.loads(response.denied_response.body) == {"errors": ["Malformed request"]}


def test_check_at_the_limit_is_decided_and_one_byte_more_is_a_413(raw_check):
    """A valid Check padded with an unknown field to exactly the limit: read and decided.
    One byte more: denied unread, not an RPC error."""
    field = b"\x9a\x06"  # field 99, length-delimited: skipped unread
    # The padding's length prefix is 4 bytes long for any length this size.
    padding = GATE_LIMIT - len(VALID) - len(field) - 4
    message = VALID + field + _varint(padding) + b"\0" * padding
    assert len(message) == GATE_LIMIT
    response = raw_check(message)
    assert response.denied_response.status.code == 401, response
    response = raw_check(message + b"\0")
    assert response.status.code == INVALID_ARGUMENT, response
    assert response.denied_response.status.code == 413, response
    assert json.loads(response.denied_response.body) == {"errors": ["Request too large"]}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
