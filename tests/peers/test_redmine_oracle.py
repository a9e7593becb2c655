"""Differential test: the same request to real Redmine 5.0.4 (GET on its REST API) and to
redmine-authz pointed at that Redmine's own database (gRPC Check with the official protos).
They must agree on the status, and on the user when allowed, except where docs/decisions.md names a
gate rule or follows Redmine 7 where 5.0.4 differs; those cases assert both sides
explicitly and say why. The comparison table is printed at the end of the run.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Callable

import pytest

from peerlib import ORACLE_ROWS, CheckCall, basic, http_request, http_status_of, ok_headers, wait_until

ROLES = {
    "admin": "ADMIN", "alice": "ACTIVE", "larry": "LOCKED", "reggie": "REGISTERED",
    "tina": "TWOFA", "mona": "MUSTCHANGE", "bob": "NOKEY",
}

# Why a case may differ from Redmine 5.0.4 (the rules of docs/decisions.md).
ANONYMOUS_DENIED = "gate rule: anonymous API requests denied 401 (R-DENY-4)"
KEY_AS_PASSWORD = "gate rule: API key as the Basic password (R-BASIC-6)"
REST_OFF_DENIES_ALL = "R-REST-2: REST API off denies every gated request 403"
REDMINE7_NO_CHALLENGE = "Redmine 7: no challenge on a wrong key (R-KEY-3)"
AMBIGUOUS = "R-PARAM-2: two different values of a credential are ambiguous, 401"
AMBIGUOUS_SPELLINGS = "R-CRED-4: a header in two spellings Rack folds together is ambiguous (401, 412 for a switch)"
STRICT_BASE64 = "R-BASIC-2: malformed Basic base64 is 401 (Ruby skips junk bytes)"
NUL_LOGIN = "R-LOGIN-3: a login holding NUL is refused before the database (PostgreSQL errs: 500)"
NOT_API = "R-GATE-1: not an API request, so not gated: Redmine answers it"
ANY_RELEASE = "R-PARAM-7: --redmine-version any fails closed where Redmine releases read a parameter differently"


class Creds:
    """The oracle's seeded users (redmine-oracle.sh creds), by login."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        for login, role in ROLES.items():
            assert env.get(f"{role}_LOGIN") == login, f"oracle seeds {role} as {env.get(f'{role}_LOGIN')}"

    def pw(self, login: str) -> str:
        return self.env[f"{ROLES[login]}_PASSWORD"]

    def key(self, login: str) -> str:
        return self.env[f"{ROLES[login]}_KEY"]


@dataclass
class Case:
    id: str
    path: str
    headers: Callable[[Creds], list]
    status: int  # Redmine's answer, and the gate's unless `gate` is set
    login: str | None = None  # the user when allowed (None: anonymous)
    gate: tuple[int, str | None] | None = None  # the gate's (status, login) where a named rule differs
    rule: str | None = None
    body: bytes | None = None  # sent to Redmine, and to the gate as Envoy's with_request_body does
    bug: str | None = None  # a known service bug: the case states the right answer and xfails
    # The default gate's answer (`--redmine-version any`) where it differs from 5.0.4's.
    any_gate: tuple[int, str | None] | None = None
    method: str = "GET"

    def params(self):
        marks = [pytest.mark.xfail(strict=True, reason=self.bug)] if self.bug else []
        return pytest.param(self, id=self.id, marks=marks)


CURRENT = "/users/current.json"


def key_header(login):
    return lambda c: [("X-Redmine-API-Key", c.key(login))]


def basic_pw(login, as_login=None):
    return lambda c: [("Authorization", basic(as_login or login, c.pw(login)))]


def switch(target, credential):
    return lambda c: credential(c) + [("X-Redmine-Switch-User", target)]


REST_ON = [
    # -- no credential
    Case("anonymous-current", CURRENT, lambda c: [], 401),
    Case("anonymous-issues", "/issues.json", lambda c: [], 200, None, gate=(401, None), rule=ANONYMOUS_DENIED),
    Case("anonymous-other-scheme", CURRENT, lambda c: [("Authorization", "Digest username=alice")], 401),
    # -- API key as `key` parameter and X-Redmine-API-Key header
    Case("key-param-alice", CURRENT + "?key={alice}", lambda c: [], 200, "alice"),
    Case("key-param-admin", CURRENT + "?key={admin}", lambda c: [], 200, "admin"),
    Case("key-header-alice", CURRENT, key_header("alice"), 200, "alice"),
    Case("key-header-2fa-tina", CURRENT, key_header("tina"), 200, "tina"),
    Case("key-header-must-change-mona", CURRENT, key_header("mona"), 200, "mona"),
    Case("key-header-locked-larry", CURRENT, key_header("larry"), 401),
    Case("key-header-registered-reggie", CURRENT, key_header("reggie"), 401),
    Case("key-param-wrong", CURRENT + "?key=0123456789abcdef0123456789abcdef01234567", lambda c: [], 401),
    Case("key-header-wrong", CURRENT, lambda c: [("X-Redmine-API-Key", "nope")], 401),
    Case("key-header-uppercased", CURRENT, lambda c: [("X-Redmine-API-Key", c.key("alice").upper())], 401),
    Case("key-header-malformed", CURRENT, lambda c: [("X-Redmine-API-Key", c.key("alice")[:20] + "-x")], 401),
    Case("key-param-xml", "/users/current.xml?key={alice}", lambda c: [], 200, "alice"),
    Case("key-param-format-json", "/users/current?format=json&key={alice}", lambda c: [], 200, "alice"),
    Case("key-param-wrong-xml", "/users/current.xml?key=wrong", lambda c: [], 401),
    Case("key-param-twice-same", CURRENT + "?key={alice}&key={alice}", lambda c: [], 200, "alice"),
    # Redmine takes the last `key`; the gate refuses to guess.
    Case("key-param-twice-different", CURRENT + "?key={alice}&key={admin}", lambda c: [], 200, "admin",
         gate=(401, None), rule=AMBIGUOUS),
    # -- the query as Rack 2 (Redmine 4.2 to 5.1) reads it: `;` separates too, brackets before a
    # name are skipped; Rack 3 (Redmine 6) reads neither, so the default gate fails closed.
    Case("query-semicolon-format", "/users/current?x=1;format=json&key={alice}", lambda c: [], 200, "alice"),
    Case("query-semicolon-wrong-key-hides-header", CURRENT + "?x=1;key=junk", key_header("alice"), 401),
    Case("query-leading-bracket-key", CURRENT + "?[key]={alice}", lambda c: [], 200, "alice",
         any_gate=(401, None), rule=ANY_RELEASE),
    Case("query-trailing-bracket-key", CURRENT + "?key]={alice}", lambda c: [], 200, "alice",
         any_gate=(401, None), rule=ANY_RELEASE),
    Case("query-array-key", CURRENT + "?key[]={alice}", key_header("admin"), 401),
    Case("query-hash-key", CURRENT + "?key[a]={alice}", key_header("admin"), 401),
    Case("query-key-without-value", CURRENT + "?key", key_header("admin"), 200, "admin"),
    Case("query-encoded-key-name", CURRENT + "?k%65y={alice}", lambda c: [], 200, "alice"),
    Case("query-blank-key-after-valid", CURRENT + "?key={alice}&key=", key_header("admin"), 200, "admin",
         gate=(401, None), rule=AMBIGUOUS),
    Case("query-type-conflict", CURRENT + "?a=1&a[b]=2", key_header("alice"), 400),
    Case("query-bad-escape", CURRENT + "?a=%zz", key_header("alice"), 400),
    # -- bodies: Rails merges the body's parameters into params[:key] and params[:format]
    Case("key-in-form-body-over-header-key", CURRENT,
         lambda c: key_header("alice")(c) + [("Content-Type", "application/x-www-form-urlencoded")],
         200, "admin", body=b"key={admin}"),
    Case("key-in-form-body-after-semicolon", CURRENT,
         lambda c: key_header("alice")(c) + [("Content-Type", "application/x-www-form-urlencoded")],
         200, "alice", body=b"x=1;key={admin}"),
    Case("key-in-json-body-only", CURRENT, lambda c: [("Content-Type", "application/json")],
         200, "admin", body=b'{{"key":"{admin}"}}'),
    Case("key-in-json-body-query-wins", CURRENT + "?key={alice}", lambda c: [("Content-Type", "application/json")],
         200, "alice", body=b'{{"key":"{admin}"}}'),
    Case("format-in-json-body", "/users/current", lambda c: [("Content-Type", "application/json")],
         200, "admin", body=b'{{"format":"json","key":"{admin}"}}'),
    Case("key-in-xml-body-root", CURRENT, lambda c: key_header("alice")(c) + [("Content-Type", "application/xml")],
         200, "admin", body=b"<key>{admin}</key>"),
    Case("key-in-xml-body-nested", CURRENT, lambda c: key_header("alice")(c) + [("Content-Type", "application/xml")],
         200, "alice", body=b"<user><key>{admin}</key></user>"),
    Case("key-in-multipart-body", CURRENT,
         lambda c: key_header("alice")(c) + [("Content-Type", "multipart/form-data; boundary=XyZ")],
         200, "admin", body=b'--XyZ\r\nContent-Disposition: form-data; name="key"\r\n\r\n{admin}\r\n--XyZ--\r\n'),
    Case("json-body-unparseable", CURRENT, lambda c: key_header("alice")(c) + [("Content-Type", "application/json")],
         400, body=b"{{bad"),
    # -- paths Rails routes to the API although they do not end in .json/.xml literally
    Case("api-path-trailing-slash-key", CURRENT + "/?key={alice}", lambda c: [], 200, "alice"),
    Case("api-path-trailing-slash-anonymous", "/issues.json/", lambda c: [], 200, None, gate=(401, None),
         rule=ANONYMOUS_DENIED),
    Case("api-path-xml-trailing-slash-key", "/users/current.xml/?key={alice}", lambda c: [], 200, "alice"),
    Case("api-path-percent-encoded-extension-key", "/users/current.js%6Fn?key={alice}", lambda c: [], 200,
         "alice"),
    Case("api-path-percent-encoded-extension-anonymous", "/issues.js%6Fn", lambda c: [], 200, None,
         gate=(401, None), rule=ANONYMOUS_DENIED),
    Case("api-path-format-param-trailing-slash", "/users/current/?format=json&key={alice}", lambda c: [], 200,
         "alice"),
    # -- HTTP Basic with login and password
    Case("basic-pw-alice", CURRENT, basic_pw("alice"), 200, "alice"),
    Case("basic-pw-admin", CURRENT, basic_pw("admin"), 200, "admin"),
    Case("basic-pw-no-key-bob", CURRENT, basic_pw("bob"), 200, "bob"),
    Case("basic-pw-login-case-insensitive", CURRENT, basic_pw("alice", "ALICE"), 200, "alice"),
    Case("basic-pw-login-trimmed", CURRENT, basic_pw("alice", " alice "), 200, "alice"),
    Case("basic-pw-scheme-lowercase", CURRENT,
         lambda c: [("Authorization", "basic " + basic("alice", c.pw("alice"))[6:])], 200, "alice"),
    Case("basic-pw-wrong", CURRENT, lambda c: [("Authorization", basic("alice", "wrong"))], 401),
    Case("basic-pw-unknown-user", CURRENT, lambda c: [("Authorization", basic("nobody", "pw"))], 401),
    Case("basic-pw-empty", CURRENT, lambda c: [("Authorization", basic("alice", ""))], 401),
    Case("basic-pw-locked-larry", CURRENT, basic_pw("larry"), 401),
    Case("basic-pw-registered-reggie", CURRENT, basic_pw("reggie"), 401),
    Case("basic-pw-2fa-tina", CURRENT, basic_pw("tina"), 401),
    Case("basic-pw-must-change-mona", CURRENT, basic_pw("mona"), 403),
    Case("basic-malformed", CURRENT, lambda c: [("Authorization", "Basic !!!")], 401),
    Case("basic-base64-with-junk", CURRENT,
         lambda c: [("Authorization", basic("alice", c.pw("alice")) + "*")], 200, "alice",
         gate=(401, None), rule=STRICT_BASE64),
    # -- HTTP Basic with an API key
    Case("basic-key-as-user-alice", CURRENT, lambda c: [("Authorization", basic(c.key("alice"), "x"))], 200, "alice"),
    # No colon: the whole is the user name, no password; Redmine tries it as an API key.
    Case("basic-key-no-colon-alice", CURRENT,
         lambda c: [("Authorization", "Basic " + base64.b64encode(c.key("alice").encode()).decode())], 200, "alice"),
    Case("basic-login-no-colon-alice", CURRENT,
         lambda c: [("Authorization", "Basic " + base64.b64encode(b"alice").decode())], 401),
    # -- logins as Ruby strips and lowers them (R-LOGIN): ASCII space, tab and NUL at the ends
    # go; Unicode spaces stay; `İ` lowers to `i̇`, not `i`; a NUL inside is refused before the
    # database (Redmine on PostgreSQL answers 500 there).
    Case("basic-login-tab-padded-alice", CURRENT, basic_pw("alice", "\talice\t"), 200, "alice"),
    Case("basic-login-nul-padded-alice", CURRENT, basic_pw("alice", "\0alice\0"), 200, "alice"),
    Case("basic-login-nbsp-padded-alice", CURRENT, basic_pw("alice", "\u00a0alice"), 401),
    Case("basic-login-ideographic-space-alice", CURRENT, basic_pw("alice", "alice\u3000"), 401),
    Case("basic-login-dotted-capital-i", CURRENT, basic_pw("alice", "ALİCE"), 401),
    Case("basic-login-fullwidth-alice", CURRENT, basic_pw("alice", "ＡＬＩＣＥ"), 401),
    Case("basic-login-nul-inside", CURRENT, basic_pw("alice", "al\0ice"), 500,
         gate=(401, None), rule=NUL_LOGIN),
    Case("basic-key-as-user-2fa-tina", CURRENT, lambda c: [("Authorization", basic(c.key("tina"), "x"))], 200, "tina"),
    Case("basic-key-as-user-must-change-mona", CURRENT,
         lambda c: [("Authorization", basic(c.key("mona"), "x"))], 403),
    Case("basic-key-as-user-locked-larry", CURRENT, lambda c: [("Authorization", basic(c.key("larry"), "x"))], 401),
    Case("basic-key-as-password-alice", CURRENT, lambda c: [("Authorization", basic("alice", c.key("alice")))],
         401, gate=(200, "alice"), rule=KEY_AS_PASSWORD),
    Case("basic-key-as-password-any-user", CURRENT,
         lambda c: [("Authorization", basic("someone", c.key("admin")))], 401, gate=(200, "admin"),
         rule=KEY_AS_PASSWORD),
    # -- bearer tokens: Redmine 5.0.4 has no OAuth (no Doorkeeper tables)
    Case("bearer-header", CURRENT, lambda c: [("Authorization", "Bearer some-token")], 401),
    Case("bearer-access-token-param", CURRENT + "?access_token=some-token", lambda c: [], 401),
    Case("bearer-on-public-data", "/issues.json", lambda c: [("Authorization", "Bearer some-token")], 200, None,
         gate=(401, None), rule=ANONYMOUS_DENIED),
    # -- precedence: the first credential present decides, a wrong one never falls back
    Case("precedence-wrong-param-over-good-header", CURRENT + "?key=wrong", key_header("alice"), 401),
    Case("precedence-param-over-header", CURRENT + "?key={alice}", key_header("admin"), 200, "alice"),
    Case("precedence-blank-param-then-header", CURRENT + "?key=", key_header("admin"), 200, "admin"),
    Case("precedence-header-over-basic", CURRENT, lambda c: key_header("alice")(c) + basic_pw("admin")(c),
         200, "alice"),
    Case("precedence-wrong-header-over-good-basic", CURRENT,
         lambda c: [("X-Redmine-API-Key", "wrong")] + basic_pw("admin")(c), 401),
    Case("precedence-key-over-bearer", CURRENT + "?key={alice}",
         lambda c: [("Authorization", "Bearer some-token")], 200, "alice"),
    # -- X-Redmine-Switch-User
    Case("switch-admin-to-alice", CURRENT, switch("alice", key_header("admin")), 200, "alice"),
    Case("switch-admin-to-bob", CURRENT, switch("bob", key_header("admin")), 200, "bob"),
    Case("switch-admin-to-2fa-tina", CURRENT, switch("tina", key_header("admin")), 200, "tina"),
    Case("switch-admin-to-must-change-mona", CURRENT, switch("mona", key_header("admin")), 200, "mona"),
    Case("switch-admin-to-admin", CURRENT, switch("admin", key_header("admin")), 200, "admin"),
    Case("switch-admin-to-case-insensitive", CURRENT, switch("ALICE", key_header("admin")), 200, "alice"),
    Case("switch-admin-to-locked-larry", CURRENT, switch("larry", key_header("admin")), 412),
    Case("switch-admin-to-registered-reggie", CURRENT, switch("reggie", key_header("admin")), 412),
    Case("switch-admin-to-unknown", CURRENT, switch("ghost", key_header("admin")), 412),
    Case("switch-admin-blank-header", CURRENT, switch("  ", key_header("admin")), 200, "admin"),
    Case("switch-admin-basic-pw-to-alice", CURRENT, switch("alice", basic_pw("admin")), 200, "alice"),
    Case("switch-admin-basic-key-to-bob", CURRENT,
         switch("bob", lambda c: [("Authorization", basic(c.key("admin"), "x"))]), 200, "bob"),
    Case("switch-admin-param-key-to-mona", CURRENT + "?key={admin}", switch("mona", lambda c: []), 200, "mona"),
    Case("switch-non-admin-alice-to-admin", CURRENT, switch("admin", key_header("alice")), 200, "alice"),
    Case("switch-non-admin-bob-to-larry", CURRENT, switch("larry", basic_pw("bob")), 200, "bob"),
    Case("switch-non-admin-tina-to-ghost", CURRENT, switch("ghost", key_header("tina")), 200, "tina"),
    # -- header spellings: Rack reads `X_Redmine_API_Key` as `X-Redmine-API-Key`, the last wins
    Case("key-header-underscore-alice", CURRENT, lambda c: [("X_Redmine_API_Key", c.key("alice"))], 200, "alice"),
    Case("key-header-mixed-spelling-alice", CURRENT, lambda c: [("x-redmine_api-KEY", c.key("alice"))], 200, "alice"),
    Case("key-header-two-spellings", CURRENT,
         lambda c: [("X-Redmine-API-Key", c.key("alice")), ("X_Redmine_API_Key", c.key("admin"))],
         200, "admin", gate=(401, None), rule=AMBIGUOUS_SPELLINGS),
    Case("switch-underscore-admin-to-alice", CURRENT,
         lambda c: key_header("admin")(c) + [("X_Redmine_Switch_User", "alice")], 200, "alice"),
    Case("switch-underscore-non-admin-alice-to-admin", CURRENT,
         lambda c: key_header("alice")(c) + [("X_Redmine_Switch_User", "admin")], 200, "alice"),
    Case("switch-two-spellings", CURRENT,
         lambda c: key_header("admin")(c) + [("X-Redmine-Switch-User", "alice"), ("X_Redmine_Switch_User", "bob")],
         200, "bob", gate=(412, None), rule=AMBIGUOUS_SPELLINGS),
]

REST_OFF = [
    Case("rest-off-key-alice", CURRENT, key_header("alice"), 403),
    Case("rest-off-anonymous", CURRENT, lambda c: [], 403),
    Case("rest-off-basic-pw-alice", CURRENT, basic_pw("alice"), 403),
    Case("rest-off-wrong-key", CURRENT + "?key=wrong", lambda c: [], 403),
    Case("rest-off-switch", CURRENT, switch("alice", key_header("admin")), 403),
    Case("rest-off-xml", "/users/current.xml?key={alice}", lambda c: [], 403),
    # Redmine 5.0.4 ignores credentials with the REST API off and serves public data anonymously.
    Case("rest-off-public-data-anonymous", "/issues.json", lambda c: [], 200, None, gate=(403, None),
         rule=REST_OFF_DENIES_ALL),
    Case("rest-off-public-data-with-key", "/issues.json", key_header("alice"), 200, None, gate=(403, None),
         rule=REST_OFF_DENIES_ALL),
]

# A file named report.json, attached to the public issue (the `attachment` fixture): its file
# name swallows the extension, so Redmine serves it as a web download, not the JSON API.
ATTACHMENTS = [
    Case("attachment-download-named-json-anonymous", "/attachments/download/{attachment}/report.json",
         lambda c: [], 200),
    Case("attachment-show-named-json-anonymous", "/attachments/{attachment}/report.json", lambda c: [], 200),
    Case("attachment-show-named-json-format-param", "/attachments/{attachment}/report.json?format=json",
         lambda c: [], 200),
    Case("attachment-download-named-json-with-key", "/attachments/download/{attachment}/report.json",
         key_header("alice"), 200),
    Case("attachment-download-named-json-missing", "/attachments/download/999999/report.json", lambda c: [],
         404, gate=(200, None), rule=NOT_API),
    # Redmine 5.0.4 reads `?format=json` on a named download (5.1.8 and 6.0.5 fix it to HTML).
    Case("attachment-download-named-format-param", "/attachments/download/{attachment}/report.json?format=json",
         lambda c: [], 200, gate=(401, None), rule=ANONYMOUS_DENIED),
    Case("attachment-by-id-json", "/attachments/{attachment}.json", lambda c: [], 200, gate=(401, None),
         rule=ANONYMOUS_DENIED),
]


@dataclass
class Answer:
    status: int
    login: str | None
    challenge: str | None

    def show(self) -> str:
        text = str(self.status)
        if self.login:
            text += f" {self.login}"
        if self.challenge:
            text += " +challenge"
        return text


def ask_redmine(oracle, path, headers, body=None) -> Answer:
    response = http_request(oracle.port, "GET", path, headers, body=body, timeout=30)
    login = None
    if response.status == 200 and "/users/current" in path:
        if ".xml" in path:
            match = re.search(rb"<login>([^<]*)</login>", response.body)
            login = match.group(1).decode() if match else None
        else:
            login = json.loads(response.body)["user"]["login"]
    return Answer(response.status, login, response.header("www-authenticate"))


def ask_gate(authz, path, headers, body=None) -> Answer:
    call = CheckCall(path=path, headers=headers, host="127.0.0.1:3000", body=body)
    response = authz.client.check(call)
    challenge = None
    if response.status.code != 0:
        challenge = {h.header.key.lower(): h.header.value for h in response.denied_response.headers}.get(
            "www-authenticate"
        )
    return Answer(http_status_of(response), ok_headers(response).get("x-auth-user-login"), challenge)


def compare(case: Case, oracle, authz, creds: Creds, attachment: int | None = None, authz_any=None):
    path = case.path.format(
        alice=creds.key("alice"), admin=creds.key("admin"), attachment=attachment
    )
    headers = case.headers(creds)
    body = case.body.decode().format(alice=creds.key("alice"), admin=creds.key("admin")).encode() if case.body else None
    redmine = ask_redmine(oracle, path, headers, body)
    gate = ask_gate(authz, path, headers, body)
    if authz_any is not None:
        # The default gate (`--redmine-version any`): 5.0.4's answer, or a fail-closed one.
        gate_any = ask_gate(authz_any, path, headers, body)
        assert (gate_any.status, gate_any.login) == (case.any_gate or case.gate or (case.status, case.login)), (
            f"the default gate answered {gate_any}"
        )

    expected_gate = case.gate or (case.status, case.login)
    verdict = case.rule or "agree"
    # Redmine 5.0.4 sends the Basic challenge with every API 401; Redmine 7 (and R-KEY-3) leave
    # it off when the credential was an API key, so a browser does not prompt for a password.
    key_401 = redmine.status == 401 and redmine.challenge and gate.status == 401 and not gate.challenge
    if key_401 and case.rule is None:
        verdict = REDMINE7_NO_CHALLENGE
    if (redmine.status, redmine.login) != (case.status, case.login) or (gate.status, gate.login) != expected_gate:
        verdict = "KNOWN BUG (xfail)" if case.bug else "MISMATCH"
    ORACLE_ROWS.append((case.id, redmine.show(), gate.show(), verdict))

    assert (redmine.status, redmine.login) == (case.status, case.login), f"Redmine answered {redmine}"
    assert (gate.status, gate.login) == expected_gate, f"gate answered {gate}, Redmine {redmine}"
    if case.rule is None:
        assert (gate.status, gate.login) == (redmine.status, redmine.login)
    if redmine.status == 401 and gate.status == 401:
        if verdict == REDMINE7_NO_CHALLENGE:
            # Only for API keys (header, parameter or malformed/unknown key); never for Basic.
            assert any(k.lower() == "x-redmine-api-key" for k, _ in headers) or "key=" in path, case.id
        else:
            assert bool(gate.challenge) == bool(redmine.challenge), (gate, redmine)
            if gate.challenge:
                assert gate.challenge == redmine.challenge == 'Basic realm="Redmine API"'


@pytest.fixture(scope="module")
def creds(oracle) -> Creds:
    return Creds(oracle.creds)


@pytest.fixture(scope="module")
def authz_oracle_any(oracle, start_authz):
    """The service on Redmine's database with the default `--redmine-version any`."""
    import os

    from peerlib import db_url

    instance = start_authz(db_url(os.environ.get("REDMINE_ORACLE_DB", "redmine_oracle")), "oracle-any",
                           extra=("--redmine-version", "any"))
    yield instance
    if instance._client:
        instance._client.close()


@pytest.mark.parametrize("case", [c.params() for c in REST_ON])
def test_rest_api_on(case, oracle, authz_oracle, authz_oracle_any, creds):
    compare(case, oracle, authz_oracle, creds, authz_any=authz_oracle_any)


REPORT_JSON = b'{"report": "not an API answer"}\n'


@pytest.fixture(scope="module")
def attachment(oracle, creds) -> int:
    """The id of report.json on the oracle's public issue, uploaded through Redmine's own REST
    API with the admin's key the first time (kept for later runs)."""
    admin = [("X-Redmine-API-Key", creds.key("admin"))]
    issues = http_request(oracle.port, "GET", f"/projects/{creds.env['PUBLIC_PROJECT']}/issues.json", admin)
    issue = issues.json()["issues"][0]["id"]

    def find() -> int | None:
        found = http_request(oracle.port, "GET", f"/issues/{issue}.json?include=attachments", admin).json()
        ids = [a["id"] for a in found["issue"]["attachments"] if a["filename"] == "report.json"]
        return ids[0] if ids else None

    if find() is None:
        upload = http_request(oracle.port, "POST", "/uploads.json?filename=report.json",
                              admin + [("Content-Type", "application/octet-stream")], body=REPORT_JSON)
        assert upload.status == 201, upload.body[:300]
        token = upload.json()["upload"]["token"]
        body = {"issue": {"uploads": [{"token": token, "filename": "report.json",
                                       "content_type": "application/json"}]}}
        attached = http_request(oracle.port, "PUT", f"/issues/{issue}.json",
                                admin + [("Content-Type", "application/json")], body=json.dumps(body).encode())
        assert attached.status in (200, 204), attached.body[:300]
    found = find()
    assert found is not None
    return found


@pytest.mark.parametrize("case", [c.params() for c in ATTACHMENTS])
def test_files_named_like_api_paths(case, oracle, authz_oracle, creds, attachment):
    compare(case, oracle, authz_oracle, creds, attachment)


@pytest.fixture(scope="module")
def envoy_redmine(envoy_pool, authz_oracle, oracle):
    """The example Envoy, gated by the service on Redmine's own database, in front of Redmine."""
    return envoy_pool.get(authz_oracle.port, False, oracle.port)


def test_a_file_named_report_json_downloads_through_envoy(envoy_redmine, attachment):
    """A web user (no credential) downloads report.json through the gate; the JSON API for the
    same attachment still needs a credential."""
    download = http_request(envoy_redmine.port, "GET", f"/attachments/download/{attachment}/report.json")
    assert (download.status, download.body) == (200, REPORT_JSON), download.body[:300]
    page = http_request(envoy_redmine.port, "GET", f"/attachments/{attachment}/report.json")
    assert page.status == 200 and b"<html" in page.body, page.body[:300]
    api = http_request(envoy_redmine.port, "GET", f"/attachments/{attachment}.json")
    assert api.status == 401 and api.header("www-authenticate") == 'Basic realm="Redmine API"', api.body[:300]


@pytest.fixture(scope="module")
def rest_api_off(oracle, authz_oracle, creds):
    """Switches Redmine's REST API off with Redmine's own code (Setting.rest_api_enabled=),
    waits until both the service and Redmine see it, and switches it back on afterwards."""
    probe = [("X-Redmine-API-Key", creds.key("alice"))]
    oracle.setting("rest_api_enabled", "0")
    try:
        wait_until(lambda: ask_gate(authz_oracle, CURRENT, probe).status == 403, 15, "the gate to see REST off")
        wait_until(lambda: ask_redmine(oracle, CURRENT, probe).status == 403, 15, "Redmine to see REST off")
        yield
    finally:
        oracle.setting("rest_api_enabled", "1")
        wait_until(lambda: ask_gate(authz_oracle, CURRENT, probe).status == 200, 15, "the gate to see REST on")
        wait_until(lambda: ask_redmine(oracle, CURRENT, probe).status == 200, 15, "Redmine to see REST on")


@pytest.mark.parametrize("case", [c.params() for c in REST_OFF])
def test_rest_api_off(case, oracle, authz_oracle, creds, rest_api_off):
    compare(case, oracle, authz_oracle, creds)


def test_matrix_is_large_enough():
    assert len(REST_ON) + len(REST_OFF) + len(ATTACHMENTS) >= 40
    ids = [c.id for c in REST_ON + REST_OFF + ATTACHMENTS]
    assert len(ids) == len(set(ids))
