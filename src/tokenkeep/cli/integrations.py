"""``tokenkeep integrations``: OAuth apps (Salesforce connected apps), read and written
through the store directly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import pydantic
import typer
from rich.table import Table

from tokenkeep.cli._shared import (
    console,
    fail,
    print_json,
    pydantic_message,
    settings_or_fail,
    with_store,
)

__all__ = ["integrations_app"]

integrations_app = typer.Typer(help="OAuth apps (Salesforce connected apps).", no_args_is_help=True)


def _integration_dict(integration: Any) -> dict[str, Any]:
    from tokenkeep.api.schemas import integration_out

    return integration_out(integration).model_dump(mode="json")


@integrations_app.command("list")
def integrations_list(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List integrations."""

    async def go(store: Any) -> Any:
        return await store.integrations.list()

    items = [_integration_dict(i) for i in with_store(go)]
    if json_output:
        print_json(items)
        return
    table = Table("key", "provider", "auth mode", "client id", "login url", "secret")
    for i in items:
        table.add_row(
            i["key"],
            i["provider"],
            i["auth_mode"],
            i["client_id"],
            i["login_url"],
            "yes" if i["has_client_secret"] or i["has_private_key"] else "no",
        )
    console.print(table)


@integrations_app.command("show")
def integrations_show(key: str) -> None:
    """Show one integration (as JSON, without secrets)."""

    async def go(store: Any) -> Any:
        return await store.integrations.get(key)

    print_json(_integration_dict(with_store(go)))


@integrations_app.command("put")
def integrations_put(
    key: str,
    *,
    client_id: Annotated[str, typer.Option(help="The connected app's consumer key.")],
    client_secret: Annotated[
        str | None, typer.Option(help="Consumer secret (or TOKENKEEP_CLIENT_SECRET).")
    ] = None,
    login_url: Annotated[str, typer.Option()] = "https://login.salesforce.com",
    scope: Annotated[list[str] | None, typer.Option(help="Repeat for several scopes.")] = None,
    auth_mode: Annotated[str, typer.Option(help="oauth2, jwt_bearer or client_credentials.")] = (
        "oauth2"
    ),
    private_key_file: Annotated[Path | None, typer.Option(help="PEM key for jwt_bearer.")] = None,
    username: Annotated[str | None, typer.Option(help="Subject for jwt_bearer.")] = None,
    session_timeout: Annotated[int | None, typer.Option(help="Org session timeout, s.")] = None,
    provider: Annotated[str, typer.Option()] = "salesforce",
) -> None:
    """Create or replace an integration."""
    from tokenkeep.api.schemas import IntegrationIn
    from tokenkeep.lifecycle.integrations import save_integration

    settings = settings_or_fail()
    secret = client_secret or os.environ.get("TOKENKEEP_CLIENT_SECRET")
    fields: dict[str, Any] = {
        "provider": provider,
        "client_id": client_id,
        "login_url": login_url,
        "scopes": scope or [],
        "auth_mode": auth_mode,
        "username": username,
        "session_timeout_seconds": session_timeout,
    }
    if secret:
        fields["client_secret"] = secret
    if private_key_file is not None:
        try:
            fields["private_key"] = private_key_file.read_text()
        except OSError as exc:
            fail(f"cannot read {private_key_file}: {exc.strerror}")
    try:
        body = IntegrationIn(**fields)
    except pydantic.ValidationError as exc:
        fail(pydantic_message(exc))

    async def go(store: Any) -> Any:
        return await save_integration(store, settings, key, body.to_spec())

    integration, created = with_store(go)
    console.print(f"{'created' if created else 'updated'} integration [bold]{integration.key}[/]")


@integrations_app.command("delete")
def integrations_delete(key: str) -> None:
    """Delete an integration (refused while connections use it)."""

    async def go(store: Any) -> None:
        await store.integrations.delete(key)

    with_store(go)
    console.print(f"deleted integration [bold]{key}[/]")
