"""The ``orchlab`` command. ``orchlab serve``: the gateway (`orchlab.serve`) on uvicorn.

``orchlab keys``: the gateway's API keys in the config's store (`orchlab.store.keys`).

Example::

    orchlab serve                                   # the embedded default, on 127.0.0.1:8000
    orchlab serve --config llm_orchestrator.yaml --port 8080 --workers 2
    orchlab keys create --user ana --roles llm.inference,urn:orchlab:* --rpm 60 --budget 5/day
    orchlab keys list
    orchlab keys revoke ok_3f9a2c1b7d0e
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchlab.errors import InvalidRequestError, OrchlabError

if TYPE_CHECKING:
    from orchlab.store.keys import ApiKey

KEEP_ALIVE_S = 75
"""How long an idle client connection stays open: longer than clients keep theirs (httpx, so the
openai SDK: 5 s; aiohttp: 15 s; a load balancer: often 60 s), so a client never sends on a connection
the gateway is closing at that moment (uvicorn's own 5 s raced the SDK's 5 s: reset connections)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orchlab", description="orchlab: roles, not hard-coded models")
    commands = p.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the config's roles over an OpenAI-compatible API")
    serve.add_argument("--config", type=Path, help="the YAML config (default: the embedded local one)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes, one client each (default: 1)"
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log a line per request (off: answers carry x-request-id, and are traced when tracking is on)",
    )
    keys = commands.add_parser("keys", help="the gateway's API keys: create, list, revoke")
    keys.add_argument("--config", type=Path, help="the YAML config whose store holds the keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new key (printed once: the store keeps a hash)")
    create.add_argument("--user", required=True, help="who the key is for (made on first use)")
    create.add_argument(
        "--roles", help="what it may call: roles, aliases, URN namespaces (default: everything served)"
    )
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--budget", help="USD per hour/day/week/month/total, e.g. 5/day")
    create.add_argument("--expires-days", type=float, help="the key stops working after this many days")
    create.add_argument("--name", help="a label for the key")
    create.add_argument("--email", help="the user's email (when the user is new)")
    create.add_argument("--admin", action="store_true", help="an admin key: manages keys, calls no model")
    create.add_argument("--json", action="store_true", help="print JSON")
    listing = actions.add_parser("list", help="keys (prefixes only) and their limits")
    listing.add_argument("--user", help="only this user's keys")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = actions.add_parser("revoke", help="revoke a key by its id or prefix (ok_<prefix>)")
    revoke.add_argument("key", help="the key's id or prefix")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return keys(args) if args.command == "keys" else serve(args)
    except OrchlabError as exc:
        print(f"orchlab: {exc}", file=sys.stderr)
        return 2


def serve(args: argparse.Namespace) -> int:
    from orchlab.config.loader import load_config
    from orchlab.serve.app import AUTH_ENV, CONFIG_ENV, require_fastapi

    require_fastapi()
    import uvicorn

    config = args.config.expanduser().resolve() if args.config else None
    loaded = load_config(config)  # a config error is reported here, before any worker starts
    if config is not None:
        os.environ[CONFIG_ENV] = str(config)
    else:
        os.environ.pop(CONFIG_ENV, None)
    from orchlab.serve.auth import is_loopback

    loopback = is_loopback(args.host)
    auth = loaded.gateway.auth or ("none" if loopback else "keys")
    if auth == "none" and not loopback:
        raise InvalidRequestError(
            f"gateway.auth is none but --host {args.host} is not a loopback address: anyone who "
            "reaches it could spend the config's keys. Use gateway.auth: keys (orchlab keys create)."
        )
    os.environ[AUTH_ENV] = auth
    print(f"orchlab serve: http://{args.host}:{args.port} - {_auth_line(auth, config)}", file=sys.stderr)
    uvicorn.run(
        "orchlab.serve.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=None,
    )
    return 0


def _auth_line(auth: str, config: Path | None) -> str:
    if auth == "none":
        return "auth: none (open, loopback only; gateway.auth: keys requires API keys)"
    from orchlab.orchestrator import get_llm_client
    from orchlab.store.api import settings_of

    client = get_llm_client(config)
    try:
        where = settings_of(client).safe_url
    finally:
        client.close()
    return f"auth: keys (every request but /healthz and /readyz needs one; keys in {where})"


def keys(args: argparse.Namespace) -> int:
    import json

    from orchlab.orchestrator import get_llm_client

    client = get_llm_client(args.config.expanduser().resolve() if args.config else None)
    try:
        manager = client.keys
        if args.action == "create":
            new = manager.create(
                args.user,
                roles=args.roles,
                rpm=args.rpm,
                tpm=args.tpm,
                budget=args.budget,
                expires_in_days=args.expires_days,
                name=args.name,
                email=args.email,
                admin=args.admin,
            )
            if args.json:
                print(json.dumps({**new.info.as_dict(), "key": new.key}))
            else:
                print(new.key)
                print(
                    f"{new.info.kind} key {new.info.shown} for {new.info.user} (id {new.info.id}): "
                    "shown this once, keep it secret",
                    file=sys.stderr,
                )
        elif args.action == "list":
            found = manager.list(args.user)
            if args.json:
                print(json.dumps([k.as_dict() for k in found]))
            else:
                _print_keys(found)
        else:
            revoked = manager.revoke(args.key)
            print(json.dumps(revoked.as_dict()) if args.json else f"revoked {revoked.shown} ({revoked.user})")
    finally:
        client.close()
    return 0


def _print_keys(found: list[ApiKey]) -> None:
    columns = ("prefix", "user", "kind", "allow", "rpm", "tpm", "budget", "state", "created")
    rows = [
        (
            k.shown,
            k.user,
            k.kind,
            ",".join(k.allow) or "-",
            str(k.rpm or "-"),
            str(k.tpm or "-"),
            str(k.budget or "-"),
            "revoked" if k.revoked_at else ("active" if k.active() else "inactive"),
            f"{k.created_at:%Y-%m-%d %H:%M}",
        )
        for k in found
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
