"""Identity tokens: JWT bearer tokens from the issuers the operator configures ([auth]).

A token is checked with PyJWT against its issuer's published keys (a JWKS from OIDC discovery,
an explicit URL, or a file): the signature with an asymmetric algorithm the issuer allows (never
``none``, never an HMAC keyed with a public key), ``exp``, ``iss`` and ``aud`` required, ``nbf``
and ``iat`` checked when present, with a small leeway for clocks. The issuer is picked by the
token's unverified ``iss``, then everything is verified against that issuer's settings only.

Keys are fetched lazily (the server starts while an issuer is unreachable), cached, refreshed
after ``jwks_cache_seconds``, and refetched when a token names a key id the cache does not hold
(the issuer rotated its keys), at most once per ``jwks_refresh_seconds``: a flood of made-up key
ids costs the issuer one request, not one each. Fetches go through httpx's async client, so they
never block the event loop.

The token's claims become a :class:`~sessionpool.tenancy.Principal`: the tenant from a claim
(normalised to lower case) or fixed per issuer, the scopes from ``default_scopes`` plus whatever
``scope_map`` grants for the values of ``scopes_claim``, and the issuer's ``pools``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from sessionpool.errors import ConfigError
from sessionpool.server.auth import InvalidToken
from sessionpool.tenancy import DEFAULT_TENANT, TENANT_NAME, Principal, Scope, parse_scopes

logger = logging.getLogger("sessionpool.server.tokens")

#: the only algorithms a token may use: public-key signatures. ``none`` and HS* are never
#: accepted: an HMAC "verified" with a published public key is a forgery anyone can make.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)
#: the key type (and curve) each algorithm needs; a key never serves another algorithm
_KEY_KIND: dict[str, tuple[str, str | None]] = {
    **{alg: ("RSA", None) for alg in ASYMMETRIC_ALGORITHMS if alg[0] in "RP"},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}
_DEFAULT_ALG = {"RSA": "RS256", "P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}

#: what ACA's "Azure ContainerApps Session Executor" role allows: run code, files, sessions
EXECUTOR_SCOPES = frozenset({Scope.EXECUTE, Scope.FILES, Scope.SESSIONS})

#: the resource the dynamic-sessions clients ask tokens for: Python's LangChain, LlamaIndex and
#: AutoGen ask for dynamicsessions.io, Semantic Kernel and the JavaScript and .NET samples for
#: acasessions.io; ACA takes both
ENTRA_AUDIENCES = ("https://dynamicsessions.io", "https://acasessions.io")
ENTRA_V1_ISSUER = "https://sts.windows.net/{tid}/"
ENTRA_V2_ISSUER = "https://login.microsoftonline.com/{tid}/v2.0"
ENTRA_JWKS = "https://login.microsoftonline.com/{tid}/discovery/v2.0/keys"
#: an Entra tenant id (a GUID); the issuer URLs are built from it
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

#: longer bearer tokens are refused before any parsing (Entra's run to a few KiB)
MAX_TOKEN_BYTES = 32 * 1024
#: a verified token is taken on trust this long (never past its expiry): a key the issuer
#: withdraws stops its tokens within this time, not at once
VERIFIED_CACHE_SECONDS = 60.0
VERIFIED_CACHE_SIZE = 4096
#: a JWKS or discovery document larger than this is not one
MAX_DOCUMENT_BYTES = 1024 * 1024
FETCH_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class IssuerConfig:
    """One issuer whose tokens the server accepts (an ``[[auth.issuers]]`` entry)."""

    #: the ``iss`` claim, matched exactly
    issuer: str
    #: accepted ``aud`` values (a token must name at least one)
    audience: tuple[str, ...]
    #: the issuer's keys; with neither this nor ``jwks_file``, OIDC discovery finds them
    jwks_url: str | None = None
    jwks_file: Path | None = None
    #: every token of this issuer acts for this tenant ...
    tenant: str | None = None
    #: ... or for the tenant its claim of this name says (lower-cased)
    tenant_claim: str | None = None
    #: a claim holding scopes or roles: a space-separated string ("scp") or a list ("roles")
    scopes_claim: str | None = None
    #: a value of ``scopes_claim`` -> the scopes it grants
    scope_map: Mapping[str, frozenset[Scope]] = field(default_factory=dict, hash=False)
    #: granted to every valid token of this issuer
    default_scopes: frozenset[Scope] = EXECUTOR_SCOPES
    #: the pools its tokens may use; None: every pool
    pools: frozenset[str] | None = None
    #: names the caller in the audit trail (``token:<iss>#<subject>``)
    subject_claim: str = "sub"
    #: if not empty, only tokens whose ``principal_claims`` name one of these are accepted
    #: ("*": any principal)
    principals: tuple[str, ...] = ()
    principal_claims: tuple[str, ...] = ("sub",)
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    #: clock skew allowed on exp, nbf and iat
    leeway_seconds: float = 60.0
    #: keys older than this are fetched again before use
    jwks_cache_seconds: float = 3600.0
    #: at most one refetch per this many seconds for tokens naming an unknown key id
    jwks_refresh_seconds: float = 30.0
    #: where it was configured, for messages
    where: str = "[[auth.issuers]]"

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def jwks_source(self) -> str:
        """What identifies its key set: issuers with the same source share one cache."""
        if self.jwks_file is not None:
            return f"file:{self.jwks_file}"
        return self.jwks_url or self.discovery_url

    def check(self) -> None:
        where = self.where
        if not self.issuer:
            raise ConfigError(f"{where}: issuer is required (the tokens' exact 'iss' value)")
        if not self.audience or not all(self.audience):
            raise ConfigError(f"{where}: audience is required (the 'aud' its tokens carry)")
        if self.jwks_url is not None and self.jwks_file is not None:
            raise ConfigError(f"{where}: choose either jwks_url or jwks_file, not both")
        if self.jwks_file is None:
            setting = "jwks_url" if self.jwks_url else "issuer (OIDC discovery)"
            check_fetch_url(self.jwks_url or self.discovery_url, f"{where} {setting}")
        if (self.tenant is None) == (self.tenant_claim is None):
            raise ConfigError(
                f"{where}: set either tenant (one tenant for every token) or tenant_claim "
                "(the claim naming the tenant, e.g. 'tid' or 'org')"
            )
        if self.tenant is not None and not TENANT_NAME.fullmatch(self.tenant):
            raise ConfigError(
                f"{where} tenant: {self.tenant!r} is not a tenant name (1-63 of a-z, 0-9, '-', "
                "'_', starting with a letter or digit)"
            )
        bad = [a for a in self.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not self.algorithms:
            raise ConfigError(
                f"{where} algorithms: {bad or '[]'} not accepted; only public-key algorithms: "
                + ", ".join(ASYMMETRIC_ALGORITHMS)
            )
        if self.scope_map and not self.scopes_claim:
            raise ConfigError(f"{where}: scope_map needs scopes_claim (the claim to read)")
        if self.principals and not self.principal_claims:
            raise ConfigError(f"{where}: principals needs principal_claims")
        if not 0 <= self.leeway_seconds <= 300:
            raise ConfigError(f"{where} leeway_seconds: expected 0 to 300 seconds")
        if self.jwks_cache_seconds <= 0 or self.jwks_refresh_seconds < 0:
            raise ConfigError(
                f"{where}: jwks_cache_seconds must be > 0 and jwks_refresh_seconds >= 0"
            )


def check_fetch_url(url: str, where: str) -> None:
    """Keys are fetched over https only (a forged key set accepts forged tokens); plain http
    only from a loopback host."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return
    raise ConfigError(f"{where}: {url!r} must be an https URL (plain http only on loopback)")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the key sets --------------------------------------------------------------------------------


class _Key:
    """One usable public key of a JWKS, with its PyJWT form per algorithm (built once)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.kid: str | None = data.get("kid") if isinstance(data.get("kid"), str) else None
        self.kty: str = data["kty"]
        self.crv: str | None = data.get("crv")
        self.alg: str | None = data.get("alg")
        self._jwk: dict[str, jwt.PyJWK] = {}

    def fits(self, alg: str) -> bool:
        kty, crv = _KEY_KIND[alg]
        return self.kty == kty and (crv is None or self.crv == crv) and self.alg in (None, alg)

    def jwk(self, alg: str) -> jwt.PyJWK:
        found = self._jwk.get(alg)
        if found is None:
            found = self._jwk[alg] = jwt.PyJWK(self.data, alg)
        return found


def parse_jwks(doc: object) -> list[_Key]:
    """The signing keys of a JWKS document that this server can use (RSA and EC public keys;
    symmetric, encryption-only and malformed keys are left out). ValueError if none is."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('not a JWKS document (expected {"keys": [...]})')
    keys: list[_Key] = []
    for data in doc["keys"]:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        if data.get("kty") not in ("RSA", "EC") or "d" in data:  # never a private key
            continue
        key = _Key(data)
        alg = key.alg or _DEFAULT_ALG.get(key.crv or key.kty)
        if alg not in _KEY_KIND or not key.fits(alg):
            continue
        try:
            key.jwk(alg)
        except jwt.PyJWTError:
            continue
        keys.append(key)
    if not keys:
        raise ValueError("it holds no usable signing key (RSA or EC public keys)")
    return keys


def load_jwks_file(path: Path, where: str) -> list[_Key]:
    try:
        return parse_jwks(json.loads(path.read_bytes()))
    except OSError as exc:
        raise ConfigError(f"{where} jwks_file: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:  # json.JSONDecodeError is one
        raise ConfigError(f"{where} jwks_file: {path}: {exc}") from None


class KeySet:
    """One issuer's keys: fetched when first needed, cached, refreshed when old or when a token
    names a key id they lack (rate-limited), kept when a refresh fails."""

    def __init__(self, config: IssuerConfig) -> None:
        self.config = config
        self.source = config.jwks_source
        self._keys: list[_Key] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._error = ""
        self._lock = asyncio.Lock()
        #: successful fetches, for the log and for tests
        self.fetches = 0
        if config.jwks_file is not None:  # a file that does not parse stops the server's start
            self._keys = load_jwks_file(config.jwks_file, config.where)
            self._fetched_at = self._attempted_at = time.monotonic()

    async def key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        config, now = self.config, time.monotonic()
        if self._fetched_at is None:
            await self._refresh(now, config.jwks_refresh_seconds)
        elif now - self._fetched_at > config.jwks_cache_seconds and not self._lock.locked():
            # old keys: refresh them (while another request does, use them as they are)
            await self._refresh(now, min(config.jwks_cache_seconds, config.jwks_refresh_seconds))
        key = self._find(kid, alg)
        if key is None:  # a key id not seen yet: the issuer may have rotated its keys
            await self._refresh(time.monotonic(), config.jwks_refresh_seconds)
            key = self._find(kid, alg)
        if key is not None:
            return key.jwk(alg)
        if self._fetched_at is None:
            raise InvalidToken(f"the issuer's keys could not be fetched ({self._error})")
        if kid is None:
            raise InvalidToken(f"it names no key id (kid) and the issuer has no single {alg} key")
        raise InvalidToken(f"the issuer has no {alg} key with the token's key id {_shown(kid)}")

    def _find(self, kid: str | None, alg: str) -> _Key | None:
        if kid is None:
            fitting = [k for k in self._keys if k.fits(alg)]
            return fitting[0] if len(fitting) == 1 else None
        for key in self._keys:
            if key.kid == kid and key.fits(alg):
                return key
        return None

    async def _refresh(self, decided_at: float, interval: float) -> None:
        """Fetch the keys, unless they were fetched while this request waited, or an attempt
        (a failed one too) was made less than ``interval`` seconds ago: neither a flood of
        unknown key ids nor an unreachable issuer makes one fetch per request."""
        if self._attempted_at is not None and decided_at - self._attempted_at < interval:
            return
        async with self._lock:
            if self._attempted_at is not None and (
                self._attempted_at >= decided_at or time.monotonic() - self._attempted_at < interval
            ):
                return
            self._attempted_at = time.monotonic()
            try:
                keys = await self._load()
            except (OSError, ValueError, httpx.HTTPError) as exc:
                self._error = str(exc) or type(exc).__name__
                logger.warning(
                    "cannot fetch the keys of issuer %s from %s: %s%s",
                    self.config.issuer,
                    self.source,
                    self._error,
                    "; keeping the cached keys" if self._keys else "",
                )
                return
            self._keys, self._fetched_at = keys, time.monotonic()
            self.fetches += 1
            logger.info("keys of issuer %s: %d from %s", self.config.issuer, len(keys), self.source)

    async def _load(self) -> list[_Key]:
        config = self.config
        if config.jwks_file is not None:
            data = await asyncio.to_thread(config.jwks_file.read_bytes)
            return parse_jwks(json.loads(data))
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as client:
            url = config.jwks_url
            if url is None:
                discovery = await _get_json(client, config.discovery_url)
                if not isinstance(discovery, dict) or discovery.get("issuer") != config.issuer:
                    # OIDC discovery: the document must name the issuer it was fetched for
                    raise ValueError("the discovery document names another issuer")
                url = discovery.get("jwks_uri")
                if not isinstance(url, str):
                    raise ValueError("the discovery document has no jwks_uri")
                try:
                    check_fetch_url(url, "jwks_uri")
                except ConfigError as exc:
                    raise ValueError(exc.message) from None
            return parse_jwks(await _get_json(client, url))


async def _get_json(client: httpx.AsyncClient, url: str) -> object:
    async with client.stream("GET", url, headers={"accept": "application/json"}) as response:
        if response.status_code != 200:
            raise ValueError(f"GET {url} answered {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"GET {url}: the document is larger than 1 MiB")
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError(f"GET {url}: not JSON") from None


# --- verification --------------------------------------------------------------------------------

_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "it has expired (exp)"),
    (jwt.ImmatureSignatureError, "it is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidSignatureError, "its signature does not verify with the issuer's key"),
    (jwt.InvalidAlgorithmError, "its algorithm does not fit the issuer's key"),
    (jwt.InvalidIssuerError, "wrong issuer (iss)"),
    (jwt.InvalidKeyError, "the issuer's key is not acceptable (too short?)"),
)


def _shown(value: object) -> str:
    """A claim value in a message: quoted, and short (it came from the caller)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class JwtVerifier:
    """The server's token verifier (``server/auth.py``'s ``TokenVerifier``): tokens of the
    configured issuers to principals."""

    def __init__(self, issuers: Iterable[IssuerConfig]) -> None:
        self.issuers: dict[str, IssuerConfig] = {}
        self.keys: dict[str, KeySet] = {}
        shared: dict[str, KeySet] = {}
        for config in issuers:
            config.check()  # settings built in code get the checks a TOML file gets
            if config.issuer in self.issuers:
                raise ConfigError(f"{config.where}: issuer {config.issuer!r} is configured twice")
            self.issuers[config.issuer] = config
            source = config.jwks_source
            if source not in shared:
                shared[source] = KeySet(config)
            self.keys[config.issuer] = shared[source]
        #: verified tokens: principal, fresh until (monotonic), the token's own expiry (epoch)
        self._verified: dict[str, tuple[Principal, float, float]] = {}

    async def verify(self, token: str) -> Principal:
        """The token's principal: from the cache while its verification is fresh, else
        verified in full (a signature check costs about 0.1 ms; clients resend one token for
        its whole life)."""
        now = time.monotonic()
        cached = self._verified.get(token)
        if cached is not None:
            principal, fresh_until, expires_at = cached
            if now < fresh_until and time.time() < expires_at:
                return principal
            del self._verified[token]
        principal, expires_at = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[token] = (principal, now + VERIFIED_CACHE_SECONDS, expires_at)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("it is longer than 32 KiB")
        try:
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise InvalidToken("it is not a well-formed JWT") from None
        header, claims = unverified["header"], unverified["payload"]
        issuer = claims.get("iss")
        if not isinstance(issuer, str):
            raise InvalidToken("it names no issuer (iss)")
        config = self.issuers.get(issuer)
        if config is None:
            raise InvalidToken(f"its issuer {_shown(issuer)} is not configured on this server")
        alg = header.get("alg")
        if alg not in config.algorithms:
            raise InvalidToken(
                f"its algorithm {_shown(alg)} is not accepted (accepted: "
                + ", ".join(config.algorithms)
                + ")"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("its key id (kid) is not a string")
        key = await self.keys[issuer].key(kid, alg)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=list(config.audience),
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"it lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(
                "wrong audience (aud): this server accepts " + ", ".join(config.audience)
            ) from None
        except jwt.PyJWTError as exc:
            for kind, reason in _REASONS:
                if isinstance(exc, kind):
                    raise InvalidToken(reason) from None
            raise InvalidToken(f"it is not valid ({type(exc).__name__})") from None
        return principal_of(config, claims), float(claims["exp"]) + config.leeway_seconds


def principal_of(config: IssuerConfig, claims: Mapping[str, Any]) -> Principal:
    """Who a verified token names, under its issuer's mapping."""
    if config.principals and "*" not in config.principals:
        named = {v for c in config.principal_claims if isinstance(v := claims.get(c), str)}
        if not named & set(config.principals):
            raise InvalidToken(
                "its principal (" + ", ".join(config.principal_claims) + ") is not one this "
                "server admits (the issuer's principals)"
            )
    tenant = config.tenant or _tenant(config, claims)
    scopes = set(config.default_scopes)
    if config.scopes_claim is not None:
        for value in _claim_values(claims.get(config.scopes_claim)):
            scopes |= config.scope_map.get(value, frozenset())
    subject = claims.get(config.subject_claim) or claims.get("sub") or "?"
    return Principal(tenant, f"token:{config.issuer}#{subject}", frozenset(scopes), config.pools)


def _tenant(config: IssuerConfig, claims: Mapping[str, Any]) -> str:
    claim = config.tenant_claim
    assert claim is not None
    value = claims.get(claim)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"it has no {claim!r} claim naming its tenant")
    tenant = value.strip().lower()
    if not TENANT_NAME.fullmatch(tenant):
        raise InvalidToken(
            f"its {claim!r} claim {_shown(value)} is not a tenant name (1-63 of a-z, 0-9, '-', "
            "'_', starting with a letter or digit)"
        )
    if tenant == DEFAULT_TENANT:
        # the server keys' tenant: only an operator's fixed `tenant = "default"` maps there
        raise InvalidToken(f"its {claim!r} claim names the server's own tenant {DEFAULT_TENANT!r}")
    return tenant


def _claim_values(value: object) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


# --- the [auth] table ----------------------------------------------------------------------------

_PRESETS = ("entra",)


def _str(value: object, name: str) -> str:
    if isinstance(value, str) and value:
        return value
    raise ConfigError(f"{name}: expected a non-empty string, got {value!r}")


def _strs(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ConfigError(f"{name}: expected a string or a list of strings, got {value!r}")


def _seconds(value: object, name: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{name}: expected a number of seconds, got {value!r}")


def _scopes(value: object, name: str) -> frozenset[Scope]:
    try:
        return parse_scopes(_strs(value, name), name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _scope_map(value: object, name: str) -> dict[str, frozenset[Scope]]:
    if not isinstance(value, dict):
        raise ConfigError(f'{name}: expected a table, e.g. {{ "Code.Run" = ["execute"] }}')
    return {str(k): _scopes(v, f"{name}.{k}") for k, v in value.items()}


#: how each key of an [[auth.issuers]] entry is read (attribute name = key)
_FIELDS: dict[str, Any] = {
    "issuer": _str,
    "audience": _strs,
    "jwks_url": _str,
    "jwks_file": lambda v, n: Path(_str(v, n)).expanduser(),
    "tenant": _str,
    "tenant_claim": _str,
    "scopes_claim": _str,
    "scope_map": _scope_map,
    "default_scopes": _scopes,
    "pools": lambda v, n: frozenset(_strs(v, n)),
    "subject_claim": _str,
    "principals": _strs,
    "principal_claims": _strs,
    "algorithms": lambda v, n: tuple(a.upper() for a in _strs(v, n)),
    "leeway_seconds": _seconds,
    "jwks_cache_seconds": _seconds,
    "jwks_refresh_seconds": _seconds,
}


def parse_auth(table: Mapping[str, object], where: str = "[auth]") -> tuple[IssuerConfig, ...]:
    """The ``[auth]`` table: ``[[auth.issuers]]`` entries, checked (a JWKS file is read, so a
    broken one stops the start)."""
    unknown = set(table) - {"issuers"}
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: issuers")
    entries = table.get("issuers", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where} issuers: expected [[auth.issuers]] tables")
    out: list[IssuerConfig] = []
    for number, entry in enumerate(entries, 1):
        out += parse_issuer(entry, f"[[auth.issuers]] #{number}")
    seen: set[str] = set()
    for config in out:
        if config.issuer in seen:
            raise ConfigError(f"{config.where}: issuer {config.issuer!r} is configured twice")
        seen.add(config.issuer)
    return tuple(out)


def parse_issuer(entry: Mapping[str, object], where: str) -> list[IssuerConfig]:
    """One ``[[auth.issuers]]`` entry; the Entra preset gives two (its v1 and v2 issuers)."""
    values: dict[str, Any] = {}
    preset = entry.get("preset")
    tid = entry.get("entra_tenant_id")
    for key, raw in entry.items():
        if key in ("preset", "entra_tenant_id"):
            continue
        if key not in _FIELDS:
            known = ", ".join([*_FIELDS, "preset", "entra_tenant_id"])
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {known}")
        values[key] = _FIELDS[key](raw, f"{where} {key}")
    if preset is None:
        if tid is not None:
            raise ConfigError(f'{where}: entra_tenant_id goes with preset = "entra"')
        if "issuer" in values:
            where = f"{where} ({values['issuer']})"
        configs = [_build(values, where)]
    elif preset == "entra":
        configs = _entra(values, tid, where)
    else:
        raise ConfigError(f"{where} preset: expected one of {', '.join(_PRESETS)}, got {preset!r}")
    for config in configs:
        config.check()
        if config.jwks_file is not None:
            load_jwks_file(config.jwks_file, config.where)
    return configs


def _build(values: Mapping[str, Any], where: str) -> IssuerConfig:
    if "issuer" not in values or "audience" not in values:
        raise ConfigError(f"{where}: issuer and audience are required")
    return IssuerConfig(where=where, **values)


def _entra(values: dict[str, Any], tid: object, where: str) -> list[IssuerConfig]:
    """Microsoft Entra tokens as the dynamic-sessions clients get them
    (``get_token("https://dynamicsessions.io/.default")``: v1 tokens of the organisation's
    tenant). ACA's "Session Executor" role is an Azure role assignment, not a claim of the
    token, so the operator names who may call instead: ``principals`` (object or application
    ids; ``["*"]`` for every identity of the tenant), and may add app roles or groups through
    ``scopes_claim``/``scope_map`` (with an audience of their own app registration)."""
    if not isinstance(tid, str) or not _GUID.fullmatch(tid):
        raise ConfigError(
            f'{where}: preset = "entra" needs entra_tenant_id, the directory (tenant) id, '
            f"a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47; got {tid!r}"
        )
    tid = tid.lower()
    if not values.get("principals"):
        raise ConfigError(
            f"{where} (entra): set principals to the object ids or application (client) ids "
            "that may run code (what the Session Executor role assignment says on Azure), or "
            'principals = ["*"] to admit every identity of the Entra tenant'
        )
    preset: dict[str, Any] = {
        "audience": ENTRA_AUDIENCES,
        "jwks_url": ENTRA_JWKS.format(tid=tid),
        "subject_claim": "oid",
        "principal_claims": ("oid", "appid", "azp"),
        "algorithms": ("RS256",),
    }
    if "tenant" not in values:
        preset["tenant_claim"] = "tid"
    merged = {**preset, **values}
    if "jwks_file" in values:
        merged.pop("jwks_url")
    if "issuer" in merged:
        return [_build(merged, f"{where} (entra)")]
    return [
        _build({**merged, "issuer": issuer.format(tid=tid)}, f"{where} (entra {form})")
        for form, issuer in (("v1", ENTRA_V1_ISSUER), ("v2", ENTRA_V2_ISSUER))
    ]


def verifier_for(issuers: Sequence[IssuerConfig]) -> JwtVerifier | None:
    """The verifier for the configured issuers; None when there are none."""
    return JwtVerifier(issuers) if issuers else None
