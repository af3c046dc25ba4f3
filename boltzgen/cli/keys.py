"""``boltzgen keys create|list|revoke``: API key management against a running server, with
the admin key (``--api-key``, or ``BOLTZGEN_ADMIN_KEY`` / ``BOLTZGEN_API_KEY``). A key's
plaintext is shown once, by ``create``; the server keeps only its hash."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from boltzgen.cli.service import URL, friendly_errors, service_client

app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys (needs the admin key).",
    no_args_is_help=True,
)

ADMIN = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar=["BOLTZGEN_ADMIN_KEY", "BOLTZGEN_API_KEY"],
        help="the admin key (default: $BOLTZGEN_ADMIN_KEY, then $BOLTZGEN_API_KEY)",
    ),
]


@app.command("create")
@friendly_errors
def create(
    name: Annotated[str, typer.Argument(help="a label for the key, e.g. who holds it")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print the KeyInfo as JSON")] = False,
    url: URL = None,
    api_key: ADMIN = None,
) -> None:
    """Issue a key; prints the plaintext key (shown this once) on stdout."""
    with service_client(url, api_key) as c:
        info = c.create_key(name)
    if as_json:
        typer.echo(json.dumps(info.model_dump(mode="json"), indent=2))
    else:
        typer.echo(info.key)
        typer.echo(f"key id {info.id} ({name or 'no name'}); the key is not shown again", err=True)


@app.command("list")
@friendly_errors
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
    url: URL = None,
    api_key: ADMIN = None,
) -> None:
    """List the keys: id, name, created, revoked."""
    with service_client(url, api_key) as c:
        keys = c.list_keys()
    if as_json:
        typer.echo(json.dumps([k.model_dump(mode="json", exclude={"key"}) for k in keys], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "name", "created", "revoked")
    for k in keys:
        table.add_row(k.id, k.name, f"{k.created_at:%F %T}", "yes" if k.revoked else "")
    Console(width=max(Console().width, 100)).print(table)


@app.command("revoke")
@friendly_errors
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (from 'boltzgen keys list')")],
    url: URL = None,
    api_key: ADMIN = None,
) -> None:
    """Revoke a key: every server sharing the store refuses it from the next request on."""
    with service_client(url, api_key) as c:
        c.revoke_key(key_id)
    typer.echo(f"revoked {key_id}", err=True)
