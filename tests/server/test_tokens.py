"""Identity tokens against a real local issuer: its own RSA and EC keys, OIDC discovery and a
JWKS served over HTTP on loopback, tokens signed with PyJWT, and a sessionpool server that
accepts them (in process on the fake backend, and one real server with jailed sessions).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from sessionpool.agents.config import AgentsConfig
from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.errors import ConfigError
from sessionpool.sandbox.fake import FakeBackend
from sessionpool.server.settings import ServerSettings, load_settings
from sessionpool.server.testing import ServerProcess, in_process
from sessionpool.server.tokens import ENTRA_AUDIENCES, IssuerConfig, JwtVerifier
from sessionpool.tenancy import Scope

KEY = "unit-test-key-0123"
AUDIENCE = "sessionpool-test"
POOL = PoolConfig(ready_sessions=1, cooldown_seconds=600)
API = "api-version=2024-02-02-preview"
LIST = "/pools/default/listSessions?api-version=2025-10-02-preview"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


def new_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Issuer:
    """An OIDC issuer on 127.0.0.1: discovery and JWKS from a thread, counting each fetch."""

    def __init__(self, issuer_path: str = "") -> None:
        self.rsa = new_rsa()
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.published = [public_jwk(self.rsa, "rsa-1"), public_jwk(self.ec, "ec-1")]
        self.hits: Counter[str] = Counter()
        #: answer 503 to everything (an issuer having an outage)
        self.down = False
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                issuer.hits[path] += 1
                if issuer.down:
                    self.send_error(503)
                    return
                if path == "/.well-known/openid-configuration" or path.endswith(
                    "/.well-known/openid-configuration"
                ):
                    doc: object = {"issuer": issuer.url, "jwks_uri": issuer.jwks_url}
                elif path == "/jwks.json":
                    doc = {"keys": list(issuer.published)}
                else:
                    self.send_error(404)
                    return
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.origin + issuer_path
        self.jwks_url = self.origin + "/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()

    @property
    def jwks_fetches(self) -> int:
        return self.hits["/jwks.json"]

    def claims(self, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "user-1",
            "org": "acme",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            # each token its own, as real issuers make them (and so the server's cache of
            # verified tokens never answers for a token a test means to be verified afresh)
            "jti": uuid.uuid4().hex,
        }
        return {k: v for k, v in {**base, **extra}.items() if v is not None}

    def token(
        self,
        key: Any = None,
        kid: str | None = "rsa-1",
        alg: str = "RS256",
        **claims: Any,
    ) -> str:
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(self.claims(**claims), key or self.rsa, alg, headers=headers)

    def ec_token(self, **claims: Any) -> str:
        return self.token(self.ec, "ec-1", "ES256", **claims)

    def config(self, **extra: Any) -> IssuerConfig:
        values: dict[str, Any] = {
            "issuer": self.url,
            "audience": (AUDIENCE,),
            "tenant_claim": "org",
            **extra,
        }
        return IssuerConfig(**values)


def unsigned(claims: dict[str, Any], kid: str = "rsa-1") -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def hs256_with(secret: bytes, claims: dict[str, Any], kid: str = "rsa-1") -> str:
    """HS256 keyed with ``secret``: the algorithm-confusion forgery when it is a public key."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    it = Issuer()
    yield it
    it.close()


@pytest.fixture
def fresh_issuer() -> Iterator[Issuer]:
    it = Issuer()
    yield it
    it.close()


@asynccontextmanager
async def token_server(tmp_path: Path, *issuers: IssuerConfig) -> AsyncIterator[httpx.AsyncClient]:
    """The application in process on the fake backend, accepting the server key and tokens."""
    data = tmp_path / "data"
    settings = ServerSettings(
        api_keys=(KEY,),
        data_dir=data,
        pools=(POOL,),
        agents=AgentsConfig(data_dir=data, enabled=False),
        issuers=issuers,
    )
    engine = Engine(
        EngineConfig(data_dir=data, memory_reserve_bytes=0), [POOL], backend=FakeBackend(data)
    )
    await engine.start()
    async with in_process(settings, engine) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def run(
    http: httpx.AsyncClient, token: str | None, code: str, ident: str = "demo"
) -> httpx.Response:
    body = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code}}
    headers = bearer(token) if token else {}
    url = f"/pools/default/code/execute?identifier={ident}&{API}"
    return await http.post(url, json=body, headers=headers)


async def result(http: httpx.AsyncClient, token: str | None, code: str, ident: str = "demo") -> Any:
    r = await run(http, token, code, ident)
    assert r.status_code == 200, r.text
    props = r.json()["properties"]
    return props["result"] if props["status"] == "Success" else props["stderr"] or "Failure"


async def refused(http: httpx.AsyncClient, token: str, reason: str) -> None:
    r = await run(http, token, "1 + 1")
    assert r.status_code == 401, r.text
    assert r.headers["x-ms-error-code"] == "Unauthorized"
    message = r.json()["error"]["message"]
    assert reason in message, message
    assert all(part not in r.text for part in token.split(".")[1:] if part)  # no echo


# --- accepted tokens -----------------------------------------------------------------------------


async def test_tokens_run_code_in_the_tenant_their_claim_names(
    tmp_path: Path, issuer: Issuer
) -> None:
    async with token_server(tmp_path, issuer.config()) as http:
        acme = issuer.token(org="acme")
        globex = issuer.ec_token(org="Globex", sub="user-2")  # EC, and normalised to lower case
        assert await result(http, acme, "secret = 'acme'; secret") == "'acme'"
        assert await result(http, globex, "secret = 'globex'; secret") == "'globex'"
        # same identifier, three tenants: each sees its own variable, or none
        assert await result(http, acme, "secret") == "'acme'"
        assert await result(http, globex, "secret") == "'globex'"
        assert "NameError" in await result(http, None, "secret")  # the server key: default tenant
        # another token of the same tenant meets the same session
        assert await result(http, issuer.token(org="acme", sub="user-3"), "secret") == "'acme'"
        listing = await http.get(LIST, headers=bearer(globex))
        assert listing.status_code == 200, listing.text
        assert [s["identifier"] for s in listing.json()["sessions"]] == ["demo"]


async def test_a_fixed_tenant_and_the_keys_still_work(tmp_path: Path, issuer: Issuer) -> None:
    config = issuer.config(tenant_claim=None, tenant="team-a")
    async with token_server(tmp_path, config) as http:
        assert await result(http, issuer.token(org="whatever"), "x = 7; x") == "7"
        assert await result(http, issuer.token(org=None), "x") == "7"
        assert "NameError" in await result(http, None, "x")


# --- refused tokens ------------------------------------------------------------------------------


async def test_invalid_tokens_are_401_with_the_reason(tmp_path: Path, issuer: Issuer) -> None:
    now = int(time.time())
    other = Issuer()
    try:
        async with token_server(tmp_path, issuer.config(), other.config()) as http:
            cases = [
                (issuer.token(exp=now - 120, iat=now - 900, nbf=now - 900), "expired"),
                (issuer.token(nbf=now + 600), "not valid yet"),
                (issuer.token(iat=now + 600), "not valid yet"),
                (issuer.token(aud="someone-else"), "wrong audience"),
                (issuer.token(aud=None), "lacks the 'aud' claim"),
                (issuer.token(exp=None), "lacks the 'exp' claim"),
                (issuer.token(iss="https://evil.example/"), "is not configured on this server"),
                (issuer.token(iss=None), "names no issuer"),
                # a key of its own under the issuer's kid: the signature does not verify
                (issuer.token(key=new_rsa()), "signature does not verify"),
                # the other issuer's key, claiming to be this issuer
                (issuer.token(key=other.rsa), "signature does not verify"),
                (issuer.token(kid="nobody"), "no RS256 key with the token's key id"),
                (issuer.token(kid="ec-1"), "no RS256 key with the token's key id"),
                (unsigned(issuer.claims()), "algorithm 'none' is not accepted"),
                (
                    hs256_with(
                        issuer.rsa.public_key().public_bytes(
                            serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo,
                        ),
                        issuer.claims(),
                    ),
                    "algorithm 'HS256' is not accepted",
                ),
                (issuer.token(org="Acme Corp!"), "is not a tenant name"),
                (issuer.token(org="default"), "names the server's own tenant"),
                (issuer.token(org=None), "has no 'org' claim"),
                ("eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "not a well-formed JWT"),
            ]
            for token, reason in cases:
                await refused(http, token, reason)
            # each was refused on its own merits: the valid ones of both issuers still pass
            assert await result(http, issuer.token(), "1 + 1") == "2"
            assert await result(http, other.token(org="other"), "2 + 2") == "4"
    finally:
        other.close()


async def test_a_token_without_a_scope_gets_403(tmp_path: Path, issuer: Issuer) -> None:
    config = issuer.config(
        scopes_claim="scp",
        scope_map={"code.run": frozenset({Scope.EXECUTE}), "files.rw": frozenset({Scope.FILES})},
        default_scopes=frozenset(),
    )
    files = f"/pools/default/files?identifier=demo&{API}"
    async with token_server(tmp_path, config) as http:
        runner = issuer.token(scp="code.run other.thing")
        assert await result(http, runner, "1 + 1") == "2"
        r = await http.get(files, headers=bearer(runner))
        assert r.status_code == 403, r.text
        assert "'files' scope" in r.json()["error"]["message"]
        both = issuer.token(scp="code.run files.rw")
        assert (await http.get(files, headers=bearer(both))).status_code == 200
        nothing = issuer.token()
        r = await run(http, nothing, "1 + 1")
        assert r.status_code == 403 and "'execute' scope" in r.text


async def test_roles_claim_as_a_list_and_pools(tmp_path: Path, issuer: Issuer) -> None:
    config = issuer.config(
        scopes_claim="roles",
        scope_map={"Sessions.Executor": frozenset({Scope.EXECUTE})},
        default_scopes=frozenset(),
        pools=frozenset({"other"}),
    )
    async with token_server(tmp_path, config) as http:
        r = await run(http, issuer.token(roles=["Sessions.Executor"]), "1")
        assert r.status_code == 404, r.text  # a pool outside the token's pools is not found


# --- keys: discovery, rotation, floods, files, an unreachable issuer ---------------------------


async def test_rotation_at_the_issuer_and_a_flood_of_unknown_kids(
    tmp_path: Path, fresh_issuer: Issuer
) -> None:
    it = fresh_issuer
    async with token_server(tmp_path, it.config(jwks_refresh_seconds=1.0)) as http:
        assert it.jwks_fetches == 0  # nothing fetched before the first token
        assert await result(http, it.token(), "1") == "1"
        assert await result(http, it.ec_token(), "2") == "2"
        assert it.jwks_fetches == 1
        assert it.hits["/.well-known/openid-configuration"] == 1

        # the issuer rotates: a new key replaces the old one; no restart here
        new = new_rsa()
        it.published = [public_jwk(new, "rsa-2")]
        await asyncio.sleep(1.1)
        assert await result(http, it.token(key=new, kid="rsa-2"), "3") == "3"
        assert it.jwks_fetches == 2
        await refused(http, it.token(), "no RS256 key with the token's key id")  # rsa-1 is gone

        # a flood of made-up key ids: at most one fetch per jwks_refresh_seconds
        for _ in range(2):
            before = it.jwks_fetches
            bogus = [it.token(key=new, kid=f"bogus-{uuid.uuid4()}") for _ in range(60)]
            answers = await asyncio.gather(*(run(http, t, "1") for t in bogus))
            assert all(a.status_code == 401 for a in answers)
            assert it.jwks_fetches - before <= 1
            await asyncio.sleep(1.1)
        assert await result(http, it.token(key=new, kid="rsa-2"), "4") == "4"


async def test_old_keys_are_refreshed_after_the_cache_age(
    tmp_path: Path, fresh_issuer: Issuer
) -> None:
    it = fresh_issuer
    config = it.config(jwks_url=it.jwks_url, jwks_cache_seconds=0.5, jwks_refresh_seconds=60)
    async with token_server(tmp_path, config) as http:
        assert await result(http, it.token(), "1") == "1"
        assert it.hits["/.well-known/openid-configuration"] == 0  # the explicit URL, no discovery
        await asyncio.sleep(0.6)
        assert await result(http, it.token(), "2") == "2"
        assert it.jwks_fetches == 2
        # the issuer has an outage later: the cached keys keep working
        it.down = True
        await asyncio.sleep(0.6)
        assert await result(http, it.token(), "3") == "3"
        assert it.hits["/jwks.json"] == 3


async def test_an_unreachable_issuer_does_not_stop_the_start(tmp_path: Path) -> None:
    it = Issuer()
    it.close()  # its port is closed now
    config = it.config(jwks_refresh_seconds=60)
    async with token_server(tmp_path, config) as http:
        await refused(http, it.token(), "the issuer's keys could not be fetched")
        await refused(http, it.token(), "the issuer's keys could not be fetched")
        assert await result(http, None, "1 + 1") == "2"  # keys still work


async def test_a_jwks_file(tmp_path: Path, issuer: Issuer) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": issuer.published}))
    config = issuer.config(jwks_file=path)
    hits = sum(issuer.hits.values())
    async with token_server(tmp_path, config) as http:
        assert await result(http, issuer.token(), "5 * 5") == "25"
        assert await result(http, issuer.ec_token(), "6 * 6") == "36"
        await refused(http, issuer.token(key=new_rsa()), "signature does not verify")
    assert sum(issuer.hits.values()) == hits  # nothing fetched over HTTP


def test_a_jwks_file_that_does_not_parse_stops_the_start(tmp_path: Path, issuer: Issuer) -> None:
    for content, reason in (
        ("{not json", "jwks_file"),
        ('{"keys": []}', "no usable signing key"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "no usable signing key"),
    ):
        path = tmp_path / "jwks.json"
        path.write_text(content)
        toml = tmp_path / "sessionpool.toml"
        toml.write_text(
            f'[[auth.issuers]]\nissuer = "{issuer.url}"\naudience = "{AUDIENCE}"\n'
            f'tenant = "acme"\njwks_file = "{path}"\n'
        )
        with pytest.raises(ConfigError, match=reason) as caught:
            load_settings(environ={}, config_file=toml)
        assert "[[auth.issuers]] #1" in str(caught.value)
        with pytest.raises(ConfigError, match=reason):
            JwtVerifier([issuer.config(jwks_file=path)])


async def test_a_short_rsa_key_is_refused(tmp_path: Path, issuer: Issuer) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(weak, "weak")]}))
    with warnings.catch_warnings():  # PyJWT warns about the short key when signing
        warnings.simplefilter("ignore")
        token = issuer.token(key=weak, kid="weak")
    async with token_server(tmp_path, issuer.config(jwks_file=path)) as http:
        await refused(http, token, "the issuer's key is not acceptable")


# --- settings ----------------------------------------------------------------------------------


def test_auth_table_in_settings(tmp_path: Path, issuer: Issuer) -> None:
    toml = tmp_path / "sessionpool.toml"
    toml.write_text(
        f"""
[[auth.issuers]]
issuer = "{issuer.url}"
audience = ["{AUDIENCE}", "api://other"]
tenant_claim = "org"
scopes_claim = "roles"
scope_map = {{ "Code.Run" = ["execute", "files"], "Ops" = ["admin", "metrics"] }}
default_scopes = []
pools = ["default"]
algorithms = ["rs256", "ES256"]
leeway_seconds = 5
"""
    )
    (config,) = load_settings(environ={}, config_file=toml).issuers
    assert config.issuer == issuer.url and config.audience == (AUDIENCE, "api://other")
    assert config.scope_map["Code.Run"] == {Scope.EXECUTE, Scope.FILES}
    assert config.scope_map["Ops"] == {Scope.ADMIN, Scope.METRICS}
    assert config.default_scopes == frozenset() and config.pools == frozenset({"default"})
    assert config.algorithms == ("RS256", "ES256") and config.leeway_seconds == 5
    assert load_settings(environ={}).issuers == ()


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ('audience = "a"\ntenant = "t"', "issuer and audience are required"),
        ('issuer = "https://i.example"\ntenant = "t"', "issuer and audience are required"),
        ('issuer = "https://i.example"\naudience = "a"', "either tenant"),
        (
            'issuer = "https://i.example"\naudience = "a"\ntenant = "t"\ntenant_claim = "org"',
            "either tenant",
        ),
        ('issuer = "https://i.example"\naudience = "a"\ntenant = "Not OK"', "not a tenant name"),
        (
            'issuer = "https://i.example"\naudience = "a"\ntenant = "t"\nalgorithms = ["HS256"]',
            "only public-key algorithms",
        ),
        (
            'issuer = "https://i.example"\naudience = "a"\ntenant = "t"\nalgorithms = ["none"]',
            "only public-key algorithms",
        ),
        ('issuer = "http://i.example"\naudience = "a"\ntenant = "t"', "must be an https URL"),
        (
            'issuer = "https://i.example"\naudience = "a"\ntenant = "t"\n'
            'jwks_url = "http://keys.example/jwks"',
            "jwks_url: 'http://keys.example/jwks' must be an https URL",
        ),
        (
            'issuer = "https://i.example"\naudience = "a"\ntenant = "t"\n'
            'default_scopes = ["execute", "root"]',
            "unknown scope 'root'",
        ),
        ('issuer = "https://i.example"\naudience = "a"\ntenant = "t"\nsecret = 1', "'secret'"),
        ('issuer = "https://i.example"\naudience = "a"\ntenant = "t"\npreset = "okta"', "preset"),
        ('preset = "entra"\nprincipals = ["*"]', "needs entra_tenant_id"),
        (
            'preset = "entra"\nentra_tenant_id = "11111111-2222-3333-4444-555555555555"',
            "set principals",
        ),
        (
            'issuer = "https://i.example"\naudience = "a"\ntenant = "t"\n'
            'scope_map = { "x" = ["execute"] }',
            "scope_map needs scopes_claim",
        ),
    ],
)
def test_bad_issuer_settings_are_refused_by_name(tmp_path: Path, entry: str, reason: str) -> None:
    toml = tmp_path / "sessionpool.toml"
    toml.write_text(f"[[auth.issuers]]\n{entry}\n")
    with pytest.raises(ConfigError, match=reason) as caught:
        load_settings(environ={}, config_file=toml)
    assert "[[auth.issuers]] #1" in str(caught.value)


def test_the_same_issuer_twice_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "sessionpool.toml"
    entry = '[[auth.issuers]]\nissuer = "https://i.example"\naudience = "a"\ntenant = "t"\n'
    toml.write_text(entry + entry)
    with pytest.raises(ConfigError, match="configured twice"):
        load_settings(environ={}, config_file=toml)


# --- the Entra preset --------------------------------------------------------------------------

TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ALLOWED_OID = "0f3c1a6e-1111-4c1e-9a31-a8b1c2d3e4f5"
ALLOWED_APP = "5e0b8b1c-2222-4d6a-8f00-123456789abc"


def entra_claims(**extra: Any) -> dict[str, Any]:
    """Shaped like the v1 access token ``DefaultAzureCredential`` gets for dynamic sessions."""
    now = int(time.time())
    base = {
        "aud": "https://dynamicsessions.io",
        "iss": f"https://sts.windows.net/{TID}/",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "aio": "k2BgYJj+nJ9i",
        "appid": "9a1f0c34-3333-4e0e-8c9b-0a1b2c3d4e5f",
        "appidacr": "2",
        "idp": f"https://sts.windows.net/{TID}/",
        "idtyp": "app",
        "oid": ALLOWED_OID,
        "rh": "0.AXEAv4j5cvGGr0GRqy180BHbR7...",
        "sub": ALLOWED_OID,
        "tid": TID,
        "uti": "Qm0n6pXxR0K1",
        "ver": "1.0",
        "xms_mirid": "/subscriptions/0000/resourcegroups/rg/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/agent",
    }
    return {k: v for k, v in {**base, **extra}.items() if v is not None}


def entra_settings(tmp_path: Path, issuer: Issuer, extra: str = "") -> ServerSettings:
    toml = tmp_path / "entra.toml"
    toml.write_text(
        f"""
[[auth.issuers]]
preset = "entra"
entra_tenant_id = "{TID.upper()}"
jwks_url = "{issuer.jwks_url}"
principals = ["{ALLOWED_OID}", "{ALLOWED_APP}"]
{extra}
"""
    )
    return load_settings(environ={}, config_file=toml)


def entra_token(issuer: Issuer, **claims: Any) -> str:
    # Entra's key ids are base64 thumbprints; its JWKS keys name no algorithm
    return jwt.encode(
        entra_claims(**claims),
        issuer.rsa,
        "RS256",
        headers={"kid": "rsa-1", "x5t": "rsa-1", "typ": "JWT"},
    )


async def test_entra_preset_accepts_tokens_shaped_like_entras(
    tmp_path: Path, issuer: Issuer
) -> None:
    v1, v2 = entra_settings(tmp_path, issuer).issuers
    assert v1.issuer == f"https://sts.windows.net/{TID}/"
    assert v2.issuer == f"https://login.microsoftonline.com/{TID}/v2.0"
    assert v1.audience == ENTRA_AUDIENCES and v1.tenant_claim == "tid"
    assert v1.default_scopes == {Scope.EXECUTE, Scope.FILES, Scope.SESSIONS}
    async with token_server(tmp_path, v1, v2) as http:
        token = entra_token(issuer)
        assert await result(http, token, "x = 'entra'; x") == "'entra'"
        sessions = await http.get(LIST, headers=bearer(token))
        assert [s["identifier"] for s in sessions.json()["sessions"]] == ["demo"]
        assert "NameError" in await result(http, None, "x")  # another tenant than the keys'
        # an allowed application (appid) with another object id; a v2 token (azp)
        app = entra_token(issuer, oid=str(uuid.uuid4()), appid=ALLOWED_APP)
        assert await result(http, app, "x") == "'entra'"
        v2_token = entra_token(
            issuer,
            iss=f"https://login.microsoftonline.com/{TID}/v2.0",
            ver="2.0",
            appid=None,
            azp=ALLOWED_APP,
            oid=str(uuid.uuid4()),
        )
        assert await result(http, v2_token, "x") == "'entra'"
        # Semantic Kernel asks for the other resource name of dynamic sessions
        sk = entra_token(issuer, aud="https://acasessions.io")
        assert await result(http, sk, "x") == "'entra'"
        # refused: a principal not listed, another Entra tenant, another resource's token
        stranger = entra_token(issuer, oid=str(uuid.uuid4()))
        await refused(http, stranger, "is not one this server admits")
        other_tid = str(uuid.uuid4())
        await refused(
            http,
            entra_token(issuer, iss=f"https://sts.windows.net/{other_tid}/", tid=other_tid),
            "is not configured on this server",
        )
        await refused(
            http, entra_token(issuer, aud="https://management.azure.com"), "wrong audience"
        )
        await refused(
            http,
            jwt.encode(entra_claims(), issuer.ec, "ES256", headers={"kid": "ec-1"}),
            "algorithm 'ES256' is not accepted",
        )


async def test_entra_preset_overrides(tmp_path: Path, issuer: Issuer) -> None:
    settings = entra_settings(
        tmp_path,
        issuer,
        'tenant = "contoso"\naudience = "api://sessionpool"\nscopes_claim = "roles"\n'
        'scope_map = { "Sessions.Admin" = ["admin"] }\ndefault_scopes = ["execute"]',
    )
    v1 = settings.issuers[0]
    assert (v1.tenant, v1.tenant_claim, v1.audience) == ("contoso", None, ("api://sessionpool",))
    async with token_server(tmp_path, *settings.issuers) as http:
        token = entra_token(issuer, aud="api://sessionpool", roles=["Sessions.Admin"])
        assert await result(http, token, "1 + 1") == "2"
        r = await http.get(LIST, headers=bearer(token))
        assert r.status_code == 403  # execute and admin, not sessions


# --- a real server with jailed sessions ----------------------------------------------------------


@pytest.mark.jail
@pytest.mark.filterwarnings(
    "ignore:langchain-azure-dynamic-sessions is deprecated:DeprecationWarning"
)
@pytest.mark.filterwarnings(
    "ignore:This class will be removed in a future version:DeprecationWarning:abc"
)
@pytest.mark.filterwarnings(
    "ignore:The 'validate_default' attribute with value True"
    ":pydantic.warnings.UnsupportedFieldAttributeWarning:pydantic._internal._generate_schema"
)
def test_a_real_server_runs_code_for_tokens(tmp_path: Path, issuer: Issuer) -> None:
    from langchain_azure_dynamic_sessions import SessionsPythonREPLTool

    config = f"""
[pools.default]
preload = []
ready_sessions = 1
max_sessions = 8

[[auth.issuers]]
issuer = "{issuer.url}"
audience = "{AUDIENCE}"
tenant_claim = "org"

[[auth.issuers]]
preset = "entra"
entra_tenant_id = "{TID}"
jwks_url = "{issuer.jwks_url}"
principals = ["{ALLOWED_OID}"]
"""
    with ServerProcess(tmp_path, config=config) as server:
        url = server.endpoint() + f"/code/execute?identifier=demo&{API}"

        def execute(token: str, code: str) -> httpx.Response:
            body = {"properties": {"codeInputType": "inline", "code": code}}
            return httpx.post(url, json=body, headers=bearer(token), timeout=60)

        acme, globex = issuer.token(org="acme"), issuer.token(org="globex")
        r = execute(acme, "import os; secret = 'acme'; os.getuid(), secret")
        assert r.status_code == 200, r.text
        assert r.json()["properties"]["result"].endswith("'acme')")
        r = execute(globex, "secret")
        assert r.json()["properties"]["status"] == "Failure"
        assert "NameError" in r.json()["properties"]["stderr"]
        r = execute(issuer.token(org="acme", exp=int(time.time()) - 3600), "secret")
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]

        # LangChain's tool, unmodified, with the token as its access token
        token = entra_token(issuer)
        tool = SessionsPythonREPLTool(
            pool_management_endpoint=server.endpoint(),
            access_token_provider=lambda: token,
            session_id="agent-1",
        )
        assert tool.execute("y = 6 * 7\ny")["result"] == "42"
        assert json.loads(tool.run("print(y + 1)"))["stdout"] == "43\n"
        tool.close()
        assert token not in server.log()


async def test_a_verified_token_is_cached_until_it_expires(tmp_path: Path, issuer: Issuer) -> None:
    """A token sent again is not verified again (clients resend one token for its whole life),
    but the cache never outlives the token."""
    async with token_server(tmp_path, issuer.config(leeway_seconds=0)) as http:
        token = issuer.token(exp=int(time.time()) + 2)
        assert await result(http, token, "1") == "1"
        fetches = issuer.jwks_fetches
        for i in range(20):
            assert await result(http, token, str(i)) == str(i)
        assert issuer.jwks_fetches == fetches
        await asyncio.sleep(2.2)
        await refused(http, token, "expired")
