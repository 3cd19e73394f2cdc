"""What authentication costs on the hot path: ``x += 1`` over HTTP with each kind of credential.

Run as ``.venv/bin/python -m benchmarks.auth [--rounds N] [--json PATH]`` from the repository
root, as root (the jail backend). One real ``sessionpool serve`` on loopback, configured with
the server's own key, a tenant key (``keys.json``, stored hashed) and an identity-token issuer
whose keys are in a JWKS file (RS256, 2048-bit, signed here). Each credential has its own
session; ``x += 1`` round trips are timed back to back on one keep-alive connection, in
interleaved blocks (so drift on the machine spreads evenly over the credentials). Beside them,
the cost of resolving each credential in process (``Authenticator.authenticate``), without HTTP.

``--server-key-only`` measures only the server key: it runs against a checkout from before
tenants existed (``PYTHONPATH=<that checkout>/src``), for the figure of *before*.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import RESULTS, nearest_rank
from sessionpool.server.testing import ServerProcess

KEY = "bench-auth-key-0123456789abcdef"
ISSUER = "https://issuer.bench.invalid"
AUDIENCE = "sessionpool-bench"
CONFIG = """
[pools.default]
preload = []
ready_sessions = 2
max_sessions = 16
"""
TOKEN_CONFIG = """
[[auth.issuers]]
issuer = "{issuer}"
audience = "{audience}"
jwks_file = "{jwks}"
tenant = "tokens"
"""


def make_issuer(workdir: Path) -> tuple[Path, str]:
    """A JWKS file with one RSA key, and a token it signs (valid for an hour)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": "bench", "use": "sig", "alg": "RS256"})
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "iat": now, "exp": now + 3600}
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "bench"})
    return jwks, token


def round_trips(client: httpx.Client, credential: str, ident: str, n: int) -> list[float]:
    url = "/pools/default/code/execute"
    headers = {"Authorization": f"Bearer {credential}"}
    params = {"identifier": ident}
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.post(
            url, params=params, headers=headers, json={"properties": {"code": "x += 1"}}
        )
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200 or r.json()["properties"]["status"] != "Success":
            raise SystemExit(f"x += 1 failed for {ident}: {r.status_code} {r.text[:300]}")
    return out


def in_process(credentials: dict[str, str], data_dir: Path, jwks: Path | None) -> dict[str, Any]:
    """Microseconds per ``authenticate`` call of each credential, without HTTP."""
    from sessionpool.server.auth import Authenticator
    from sessionpool.server.keys import KeyStore

    tokens = None
    if jwks is not None:
        from sessionpool.server.settings import load_settings
        from sessionpool.server.tokens import verifier_for

        cfg = data_dir.parent / "issuer.toml"
        cfg.write_text(TOKEN_CONFIG.format(issuer=ISSUER, audience=AUDIENCE, jwks=jwks))
        tokens = verifier_for(load_settings(config_file=cfg, environ={}).issuers)
    auth = Authenticator([KEY], KeyStore(data_dir / "keys.json"), tokens)
    out: dict[str, Any] = {}

    async def measure() -> None:
        for name, credential in credentials.items():
            for _ in range(200):
                await auth.authenticate([credential])
            samples = []
            for _ in range(2000):
                t0 = time.perf_counter()
                await auth.authenticate([credential])
                samples.append((time.perf_counter() - t0) * 1e6)
            samples.sort()
            out[name] = {"p50_us": nearest_rank(samples, 50), "p99_us": nearest_rank(samples, 99)}

    asyncio.run(measure())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved blocks per credential")
    parser.add_argument("--block", type=int, default=50, help="round trips per block")
    parser.add_argument("--server-key-only", action="store_true")
    parser.add_argument("--json", type=Path, help="where to write the figures")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.auth needs root (the jail backend)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sp-bench-auth-") as tmp:
        workdir = Path(tmp)
        credentials = {"server key": KEY}
        config = CONFIG
        jwks = None
        if not args.server_key_only:
            from sessionpool.server.keys import KeyStore

            (workdir / "data").mkdir(mode=0o700)
            credentials["tenant key"] = KeyStore(workdir / "data" / "keys.json").create("bench")[1]
            jwks, token = make_issuer(workdir)
            credentials["identity token (RS256)"] = token
            config += TOKEN_CONFIG.format(issuer=ISSUER, audience=AUDIENCE, jwks=jwks)
        samples: dict[str, list[float]] = {name: [] for name in credentials}
        with (
            ServerProcess(workdir, config=config, api_key=KEY) as server,
            httpx.Client(base_url=server.url, timeout=60) as client,
        ):
            idents = {name: f"auth-{i}" for i, name in enumerate(credentials)}
            for name, credential in credentials.items():
                headers = {"Authorization": f"Bearer {credential}"}
                r = client.post(
                    "/pools/default/code/execute",
                    params={"identifier": idents[name]},
                    headers=headers,
                    json={"properties": {"code": "x = 0"}},
                )
                assert r.status_code == 200, r.text
                round_trips(client, credential, idents[name], 50)  # warm-up, discarded
            for _ in range(args.rounds):
                for name, credential in credentials.items():
                    samples[name] += round_trips(client, credential, idents[name], args.block)
        report: dict[str, Any] = {"x += 1 over HTTP (ms)": {}}
        for name, values in samples.items():
            values.sort()
            report["x += 1 over HTTP (ms)"][name] = {
                "n": len(values),
                "p50": round(nearest_rank(values, 50), 3),
                "p99": round(nearest_rank(values, 99), 3),
            }
        if not args.server_key_only:
            report["authenticate in process (us)"] = in_process(credentials, workdir / "data", jwks)
    print(json.dumps(report, indent=1))
    path = args.json or RESULTS / f"auth-{time.strftime('%Y-%m-%d', time.gmtime())}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
