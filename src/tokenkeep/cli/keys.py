"""``tokenkeep keys``: API keys and encryption keys."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tokenkeep.cli._shared import (
    console,
    err_console,
    print_json,
    run,
    settings_or_fail,
    store_session,
    when,
    with_store,
)
from tokenkeep.errors import TokenkeepError
from tokenkeep.observability.logging import configure_logging

__all__ = ["keys_app"]

keys_app = typer.Typer(help="API keys and encryption keys.", no_args_is_help=True)


@keys_app.command("create-api-key")
def keys_create_api_key(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
) -> None:
    """Create an API key and print it (once)."""

    async def go(store: Any) -> Any:
        return await store.api_keys.create(name)

    created = with_store(go)
    console.print(f"API key [bold]{created.key.id}[/] ({escape(created.key.name)}):")
    sys.stdout.write(created.secret.reveal() + "\n")
    err_console.print("Store it now: it is shown only once.")


@keys_app.command("list")
def keys_list(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List API keys (never their secrets)."""

    async def go(store: Any) -> Any:
        return await store.api_keys.list()

    keys = with_store(go)
    if json_output:
        print_json(
            [
                {
                    "id": k.id,
                    "name": k.name,
                    "prefix": k.prefix,
                    "created_at": k.created_at,
                    "last_used_at": k.last_used_at,
                    "revoked_at": k.revoked_at,
                }
                for k in keys
            ]
        )
        return
    table = Table("id", "name", "prefix", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.id, k.name, k.prefix, when(k.created_at), when(k.last_used_at), when(k.revoked_at)
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id or shown prefix.")]) -> None:
    """Revoke an API key (requests with it get 401 from now on)."""

    async def go(store: Any) -> Any:
        return await store.api_keys.revoke(key_id)

    key = with_store(go)
    console.print(f"revoked API key [bold]{key.id}[/] ({escape(key.name)})")


@keys_app.command("rotate")
def keys_rotate(
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask (TOKENKEEP_ENCRYPTION_KEYS users).")
    ] = False,
) -> None:
    """Add a new encryption key, make it primary and re-encrypt every stored secret.

    With the keys file (the default) the new key is written to it first. With
    TOKENKEEP_ENCRYPTION_KEYS the new value is printed: put it in the environment of every
    instance before answering yes.
    """
    from tokenkeep.crypto import KEYS_FILE_NAME, Keyring, new_key_bytes, new_key_id, write_keys_file
    from tokenkeep.store import rotate_keys

    settings = settings_or_fail()
    configure_logging(settings.log_format, "WARNING")
    from_env = bool(settings.encryption_keys and settings.encryption_keys.get_secret_value())

    async def go() -> Any:
        async with store_session(settings) as store:
            kid, material = new_key_id(), new_key_bytes()
            # Persist the new keyring before any row is rewritten with it: a crash
            # mid-rotation must never leave data under a key nobody saved.
            future = Keyring.parse(store.keyring.export().reveal())
            future.promote(kid, material)
            if from_env:
                console.print("New TOKENKEEP_ENCRYPTION_KEYS value (primary first):")
                sys.stdout.write(future.export().reveal() + "\n")
                if not yes and not typer.confirm(
                    "Saved it where every instance reads TOKENKEEP_ENCRYPTION_KEYS?"
                ):
                    raise TokenkeepError("rotation cancelled; nothing was changed.")
            else:
                path = settings.data_dir / KEYS_FILE_NAME
                write_keys_file(path, future)
                console.print(f"new key [bold]{kid}[/] written to {path}")
            return await rotate_keys(store.db, store.keyring, kid, material)

    result = run(go())
    console.print(
        f"primary key is now [bold]{result.primary_key_id}[/]; "
        f"re-encrypted {result.rows_reencrypted} row(s)"
        + (f", {result.rows_remaining} still pending" if result.rows_remaining else "")
    )
