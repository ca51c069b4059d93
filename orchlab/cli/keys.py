"""``orchlab keys``: the gateway's API keys in the config's store (`orchlab.store.keys`), or with
``--url`` / ``ORCHLAB_URL`` in a running gateway's, through its admin endpoints (``ORCHLAB_API_KEY``
an admin key).

For example:

    orchlab keys create --user ana --roles llm.inference,urn:orchlab:* --rpm 60 --budget 5/day
    orchlab keys list
    orchlab keys revoke ok_3f9a2c1b7d0e
    ORCHLAB_URL=http://gw:8000 ORCHLAB_API_KEY=ok_<admin> orchlab keys list
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from orchlab.cli.common import ConfigOpt, EnvOpt, JsonOpt, UrlOpt, client, options, print_json

app = typer.Typer(help="The gateway's API keys: create, list, revoke.", no_args_is_help=True)


@app.callback()
def _group(
    ctx: typer.Context,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """``orchlab keys --config F create ...`` as well as ``orchlab keys create --config F``."""
    ctx.find_root().obj = options(ctx, config, env, json, url)


@app.command()
def create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option(help="who the key is for (made on first use)")],
    roles: Annotated[
        str | None, typer.Option(help="what it may call: roles, aliases, URN namespaces (default: all)")
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens per minute")] = None,
    budget: Annotated[str | None, typer.Option(help="USD per hour/day/week/month/total, e.g. 5/day")] = None,
    expires_days: Annotated[
        float | None, typer.Option(help="the key stops working after this many days")
    ] = None,
    name: Annotated[str | None, typer.Option(help="a label for the key")] = None,
    email: Annotated[str | None, typer.Option(help="the user's email (when the user is new)")] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="an admin key: manages keys, calls no model")
    ] = False,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """A new key (printed once: the store keeps only a hash)."""
    opts = options(ctx, config, env, json, url)
    fields: dict[str, Any] = {
        "roles": roles.split(",") if roles else None,
        "rpm": rpm,
        "tpm": tpm,
        "budget": budget,
        "expires_in_days": expires_days,
        "name": name,
        "email": email,
        "admin": admin,
    }
    if opts.url:
        from orchlab.cli.remote import Gateway

        row = Gateway(opts.url).create_key({"user": user, **fields})
        key = row.pop("key")
    else:
        with client(opts) as orch:
            new = orch.keys.create(user, **{**fields, "roles": roles})
        key, row = new.key, new.info.as_dict()
    if opts.json:
        print_json({**row, "key": key})
        return
    print(key)
    print(
        f"{row['kind']} key ok_{row['prefix']}_… for {row['user']} (id {row['id']}): "
        "shown this once, keep it secret",
        file=sys.stderr,
    )


@app.command("list")
def list_keys(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="only this user's keys")] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Keys (prefixes only, never the secret) and their limits."""
    opts = options(ctx, config, env, json, url)
    if opts.url:
        from orchlab.cli.remote import Gateway

        rows = Gateway(opts.url).list_keys(user)
    else:
        with client(opts) as orch:
            rows = [k.as_dict() for k in orch.keys.list(user)]
    if opts.json:
        print_json(rows)
    else:
        _print_keys(rows)


@app.command()
def revoke(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="the key's id or prefix (ok_<prefix>)")],
    config: ConfigOpt = None,
    env: EnvOpt = None,
    json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """Revoke a key by its id or prefix."""
    opts = options(ctx, config, env, json, url)
    if opts.url:
        from orchlab.cli.remote import Gateway

        row = Gateway(opts.url).revoke_key(key)
    else:
        with client(opts) as orch:
            row = orch.keys.revoke(key).as_dict()
    if opts.json:
        print_json(row)
    else:
        print(f"revoked ok_{row['prefix']}_… ({row['user']})")


def _print_keys(found: list[dict[str, Any]]) -> None:
    columns = ("prefix", "user", "kind", "allow", "rpm", "tpm", "budget", "state", "created")
    rows = [
        (
            f"ok_{k['prefix']}_…",
            str(k["user"]),
            str(k["kind"]),
            ",".join(k["allow"]) or "-",
            str(k["rpm"] or "-"),
            str(k["tpm"] or "-"),
            str(k["budget"] or "-"),
            "revoked" if k["revoked_at"] else ("active" if k["active"] else "inactive"),
            k["created_at"][:16].replace("T", " "),
        )
        for k in found
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
