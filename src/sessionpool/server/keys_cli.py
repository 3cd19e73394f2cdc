"""``sessionpool keys``: create, list, rotate and revoke tenant keys on the server's machine.

The keys file is found the way ``serve`` finds its settings (``--config``, ``--data-dir``,
``--keys-file``, the SESSIONPOOL_* variables), so the commands change the file the running
server reads; it picks the change up on the next request.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sessionpool.errors import ConfigError
from sessionpool.server.keys import KeyStore, StoredKey
from sessionpool.tenancy import DEFAULT_TENANT, parse_scopes


def add_keys_command(sub: Any) -> None:
    keys = sub.add_parser(
        "keys",
        help="create, list, rotate or revoke tenant API keys (stored hashed in the keys file)",
    )
    keys.add_argument("--config", type=Path, metavar="FILE", help="the server's TOML file")
    keys.add_argument("--data-dir", type=Path, help="the server's data directory")
    keys.add_argument("--keys-file", type=Path, help="the keys file (default <data-dir>/keys.json)")
    actions = keys.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", help="a new key; printed once, stored hashed")
    create.add_argument("--tenant", default=DEFAULT_TENANT, help="the tenant it acts for")
    create.add_argument(
        "--scopes",
        default="execute,files,sessions",
        help="comma-separated: execute, files, sessions, agents, admin, metrics, or all "
        "(default execute,files,sessions)",
    )
    create.add_argument("--pools", help="comma-separated pools it may use (default: every pool)")
    create.add_argument("--name", default="", help="a note for listings (what the key is for)")
    create.add_argument(
        "--e2b",
        action="store_true",
        help="issue it as e2b_<hex>, the form the E2B SDKs accept (E2B_API_KEY)",
    )

    listing = actions.add_parser("list", help="the keys: id, tenant, scopes, pools, state")
    listing.add_argument("--json", action="store_true", help="one JSON document")

    rotate = actions.add_parser("rotate", help="a new key like KEY_ID; the old one is revoked")
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep the old key working this long (default: revoked at once)",
    )

    revoke = actions.add_parser("revoke", help="refuse KEY_ID from the next request on")
    revoke.add_argument("key_id")
    keys.set_defaults(func=keys_command)


def _store(args: argparse.Namespace) -> KeyStore:
    from sessionpool.server.settings import load_settings  # loads the app: not to parse flags

    overrides = {"data_dir": args.data_dir, "keys_file": args.keys_file}
    settings = load_settings(overrides, config_file=args.config)
    return KeyStore(settings.key_store)


def _row(entry: StoredKey, now: float) -> dict[str, Any]:
    """An entry as listed: its stored fields but the digest, a readable date and its state."""
    row = entry.to_json()
    del row["digest"], row["expires_at"]
    row["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.created_at))
    row["state"] = "active"
    if entry.expires_at is not None:
        left = entry.expires_at - now
        row["state"] = "revoked" if left <= 0 else f"expires in {left:.0f} s"
    return row


def keys_command(args: argparse.Namespace) -> int:
    try:
        store = _store(args)
        if args.action == "create":
            scopes = parse_scopes(args.scopes.split(","), "--scopes")
            pools = None
            if args.pools:
                pools = frozenset(p.strip() for p in args.pools.split(",") if p.strip())
            entry, secret = store.create(args.tenant, scopes, pools, args.name, e2b=args.e2b)
            print(secret)
            print(
                f"key {entry.id} for tenant {entry.tenant!r} (shown once: store it now; "
                f"{store.path} keeps only its hash)",
                file=sys.stderr,
            )
        elif args.action == "rotate":
            entry, secret = store.rotate(args.key_id, args.grace)
            print(secret)
            when = f"in {args.grace:g} s" if args.grace > 0 else "now"
            print(f"key {entry.id} replaces {args.key_id}, which stops {when}", file=sys.stderr)
        elif args.action == "revoke":
            store.revoke(args.key_id)
            print(f"key {args.key_id} revoked", file=sys.stderr)
        else:
            now = time.time()
            rows = [_row(e, now) for e in store.entries()]
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                for r in rows:
                    where = ",".join(r["pools"]) if r["pools"] is not None else "*"
                    print(
                        f"{r['id']}  {r['tenant']:<16} {','.join(r['scopes']):<32} "
                        f"pools={where:<12} {r['state']:<10} {r['created_at']}  {r['name']}"
                    )
    except (ConfigError, ValueError) as exc:
        print(f"sessionpool keys: {exc}", file=sys.stderr)
        return 2
    return 0
