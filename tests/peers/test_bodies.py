"""Request bodies through a real Envoy (deploy/envoy/envoy.yaml with `with_request_body`) to the
echo upstream, gated by redmine-authz on the demo database, in both header forms (the `envoy`
fixture). Rails reads `key` from form, multipart, JSON and XML bodies, so the gate must see
those whole or answer 413; uploads (application/octet-stream) are neither needed nor buffered.
"""

from __future__ import annotations

import socket
import time

import pytest

from peerlib import new_id
from test_envoy import expect_denied, expect_identity, send, upstream_view

TOO_LARGE = "Request body too large to check for credentials"
NOT_FORWARDED = "Request body not forwarded to the authentication gateway"
LONG = 100 * 1024  # over the example's max_request_bytes (64 KiB)

PARSED = [
    ("application/x-www-form-urlencoded", b"x=1&y=2"),
    ("multipart/form-data; boundary=b",
     b'--b\r\ncontent-disposition: form-data; name="x"\r\n\r\n1\r\n--b--\r\n'),
    ("application/json", b'{"x":1}'),
    ("text/xml", b"<x>1</x>"),
]
PARSED_IDS = ["form", "multipart", "json", "xml"]


def padded(body: bytes, size: int) -> bytes:
    return body + b" " * (size - len(body))


# --------------------------------------------------------------------------- bodies Rails parses


@pytest.mark.parametrize("content_type, body", PARSED, ids=PARSED_IDS)
def test_a_small_body_reaches_the_gate_whole(envoy, demo_db, upstream, content_type, body):
    # Allowed: the gate got the body, whole (else 413 body_not_forwarded or body_too_large).
    response, _ = send(envoy, "POST", "/issues.json",
                       [("X-Redmine-API-Key", demo_db.keys["alice"]), ("Content-Type", content_type)],
                       body=body)
    payload = upstream_view(response)
    expect_identity(payload, demo_db.ids["alice"], "alice", False, "api-key")
    assert payload["body"].encode("latin-1") == body


def test_without_with_request_body_a_parsed_body_is_413(envoy_pool, envoy, authz, demo_db, upstream):
    # The same request through an Envoy that sends no body (its default): never guessed.
    bodiless = envoy_pool.get(authz.port, envoy.raw_headers, bodies=False)
    response, test_id = send(bodiless, "POST", "/issues.json",
                             [("X-Redmine-API-Key", demo_db.keys["alice"]),
                              ("Content-Type", "application/json")],
                             body=b'{"x":1}')
    expect_denied(response, test_id, upstream, 413, NOT_FORWARDED)


@pytest.mark.parametrize("content_type, body", PARSED, ids=PARSED_IDS)
def test_a_long_parsed_body_is_413_even_with_a_valid_key(envoy, demo_db, upstream, content_type, body):
    # Envoy sends the first 64 KiB; a `key` past them would be Redmine's credential.
    response, test_id = send(envoy, "POST", "/issues.json",
                             [("X-Redmine-API-Key", demo_db.keys["alice"]), ("Content-Type", content_type)],
                             body=padded(body, LONG))
    expect_denied(response, test_id, upstream, 413, TOO_LARGE)
    response, test_id = send(envoy, "PUT", "/issues/1.xml", [("Content-Type", content_type)],
                             body=padded(body, LONG))
    expect_denied(response, test_id, upstream, 413, TOO_LARGE, fmt="xml")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_envoy_calls_whole_at_exactly_64_kib_is_413(envoy, demo_db, upstream, framing):
    # Exactly 64 KiB first, then the rest with a `key`: Envoy stops buffering at
    # max_request_bytes and, its buffer holding exactly that, marks the body whole. The gate
    # compares it with Content-Length, and without one takes 64 KiB as cut.
    test_id = new_id()
    first = b"x=" + b"a" * (64 * 1024 - 2)
    rest = b"&key=" + b"0" * 40
    if framing == "chunked":
        framed, parts = "Transfer-Encoding: chunked", [chunk(first), chunk(rest) + chunk(b"")]
    else:
        framed, parts = f"Content-Length: {len(first) + len(rest)}", [first, rest]
    head = (f"POST /issues.json HTTP/1.1\r\nHost: redmine\r\nx-test-id: {test_id}\r\n"
            f"X-Redmine-API-Key: {demo_db.keys['alice']}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n{framed}\r\n\r\n")
    status, body = exchange(envoy.port, [head.encode(), *parts])
    assert status == 413, body
    assert TOO_LARGE.encode() in body
    assert test_id not in upstream.seen_ids


def test_the_client_cannot_set_the_partial_body_mark(envoy, demo_db, upstream):
    key = demo_db.keys["alice"]
    # Envoy drops the client's header and sends its own: `true` here does not cut a body...
    response, _ = send(envoy, "POST", "/issues.json",
                       [("X-Redmine-API-Key", key), ("Content-Type", "application/json"),
                        ("x-envoy-auth-partial-body", "true")], body=b'{"x":1}')
    expect_identity(upstream_view(response), demo_db.ids["alice"], "alice", False, "api-key")
    # ...and `false` does not make a cut one whole.
    response, test_id = send(envoy, "POST", "/issues.json",
                             [("X-Redmine-API-Key", key), ("Content-Type", "application/json"),
                              ("x-envoy-auth-partial-body", "false")], body=padded(b"{}", LONG))
    expect_denied(response, test_id, upstream, 413, TOO_LARGE)


def test_web_forms_of_any_length_are_not_gated(envoy, upstream):
    response, _ = send(envoy, "POST", "/projects/demo/issues",
                       [("Content-Type", "application/x-www-form-urlencoded")],
                       body=padded(b"issue[subject]=x", LONG))
    payload = upstream_view(response)
    assert len(payload["body"]) == LONG
    assert not [k for k in payload["headers"] if k.startswith("x-auth-")]


# --------------------------------------------------------------------------- uploads


@pytest.mark.parametrize("path", ["/uploads.json", "/uploads.xml?filename=a.bin", "/projects/demo/files.json"])
def test_a_long_upload_passes_with_identity(envoy, demo_db, upstream, path):
    # /uploads skips buffering; elsewhere Envoy sends the first 64 KiB, which the gate
    # does not need: Rails does not parse application/octet-stream.
    body = bytes(range(256)) * (1024 * 1024 // 256)
    response, _ = send(envoy, "POST", path,
                       [("X-Redmine-API-Key", demo_db.keys["alice"]),
                        ("Content-Type", "application/octet-stream")], body=body)
    payload = upstream_view(response)
    expect_identity(payload, demo_db.ids["alice"], "alice", False, "api-key")
    assert payload["body"].encode("latin-1") == body


def test_uploads_are_checked_before_their_body_arrives(envoy, upstream):
    # Not buffered: a wrong key is answered while the client is still sending the file.
    head = ("POST /uploads.json HTTP/1.1\r\nHost: redmine\r\nX-Redmine-API-Key: wrong\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n")
    status, body = exchange(envoy.port, [head.encode(), b"\0" * 1024], wait=5)
    assert status == 401, body
    # Buffered elsewhere: Envoy waits for 64 KiB of the body before it asks the gate.
    status, _ = exchange(envoy.port, [head.replace("/uploads.json", "/issues.json").encode(), b"\0" * 1024],
                         wait=1)
    assert status is None, "a buffered route answered before the body arrived"


def test_a_parsed_body_sent_to_the_upload_route_is_413(envoy, demo_db, upstream):
    # Redmine refuses it there (406), but it would read the body's `key` first.
    response, test_id = send(envoy, "POST", "/uploads.json",
                             [("X-Redmine-API-Key", demo_db.keys["alice"]),
                              ("Content-Type", "application/x-www-form-urlencoded")],
                             body=b"key=0123456789")
    expect_denied(response, test_id, upstream, 413, NOT_FORWARDED)


# --------------------------------------------------------------------------- raw HTTP/1.1


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def exchange(port: int, parts: list[bytes], pause: float = 0.3, wait: float = 15) -> tuple[int | None, bytes]:
    """Sends `parts` with a pause between them, then reads one response for up to `wait`
    seconds: (status, body), or (None, b"") when none came."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as conn:
        for index, part in enumerate(parts):
            if index:
                time.sleep(pause)
            conn.sendall(part)
        data = b""
        deadline = time.monotonic() + wait
        while b"\r\n\r\n" not in data:
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                received = conn.recv(65536)
            except socket.timeout:
                return None, b""
            if not received:
                break
            data += received
        head, _, body = data.partition(b"\r\n\r\n")
        if not head:
            return None, b""
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            received = conn.recv(65536)
            if not received:
                break
            body += received
        return int(head.split(b" ", 2)[1]), body
