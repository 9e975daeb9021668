"""A connection's actions: refresh now, diagnose, a reconnect link, delete.

Each one calls what the JSON route calls (the coordinator's single-flight refresh, the
diagnoser, the connect flow's session, the repository's delete), checks the session's CSRF
token first, and says what happened in a flash message on the connection's page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tokenkeep.api.connect import connect_flow
from tokenkeep.api.connections import revoke_upstream
from tokenkeep.api.dashboard.formatting import status_label
from tokenkeep.api.dashboard.render import error_page, page, render_fragment
from tokenkeep.api.dashboard.session import PREFIX, Viewer, WriterDep
from tokenkeep.api.dashboard.words import CAUSE_HEADLINES
from tokenkeep.api.deps import get_gateway
from tokenkeep.api.schemas import CONNECTION_ID_PATTERN
from tokenkeep.errors import TokenkeepError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

IdPath = Annotated[str, Path(pattern=CONNECTION_ID_PATTERN)]


async def _back(request: Request, viewer: Viewer, connection_id: str, message: str) -> Response:
    await get_gateway(request).store.dashboard_sessions.set_flash(viewer.token, message)
    return RedirectResponse(f"{PREFIX}/connections/{connection_id}", status_code=303)


@router.post("/connections/{connection_id}/refresh")
async def refresh_now(request: Request, viewer: WriterDep, connection_id: IdPath) -> Response:
    """``POST /connections/{id}/refresh``'s path: a forced refresh through the single flight."""
    gateway = get_gateway(request)
    try:
        token = await gateway.coordinator.refresh(connection_id)
    except TokenkeepError as exc:
        return await _back(request, viewer, connection_id, f"Refresh failed: {exc.message}")
    gateway.log.info("dashboard.refresh", connection_id=connection_id, version=token.version)
    return await _back(
        request, viewer, connection_id, f"Refreshed: the token is now version {token.version}."
    )


@router.post("/connections/{connection_id}/diagnose")
async def diagnose(request: Request, viewer: WriterDep, connection_id: IdPath) -> Response:
    """``POST /connections/{id}/diagnose``'s path: probe now, store and act on the verdict."""
    gateway = get_gateway(request)
    try:
        _, verdict = await gateway.diagnoser.diagnose(connection_id)
    except TokenkeepError as exc:
        return await _back(request, viewer, connection_id, f"Diagnosis failed: {exc.message}")
    conn = await gateway.store.connections.get(connection_id)
    cause = verdict.cause.value if verdict.cause is not None else None
    what = CAUSE_HEADLINES.get(cause, cause) if cause else "nothing is wrong"
    return await _back(
        request,
        viewer,
        connection_id,
        f"Diagnosis done: {what}. Status: {status_label(conn.status)}.",
    )


@router.post("/connections/{connection_id}/reconnect-link")
async def reconnect_link(
    request: Request, viewer: WriterDep, connection_id: IdPath
) -> HTMLResponse:
    """A new connect session into this connection's id (``POST /connect/sessions``' path).

    The link is shown once, on this answer (an htmx fragment, or a page without htmx)."""
    gateway = get_gateway(request)
    try:
        conn = await gateway.store.connections.get(connection_id)
        url, expires_at = await connect_flow(gateway).create_session(
            conn.integration_key, connection_id=conn.id
        )
    except TokenkeepError as exc:
        return error_page(request, exc.status_code, "No reconnect link", exc.message)
    if request.headers.get("hx-request"):
        return render_fragment(
            request, "_reconnect_link.html", viewer, conn=conn, link=url, expires_at=expires_at
        )
    return await page(
        request,
        "reconnect_link.html",
        viewer,
        active="connections",
        title="Reconnect link",
        conn=conn,
        link=url,
        expires_at=expires_at,
    )


@router.post("/connections/{connection_id}/delete")
async def delete_connection(
    request: Request,
    viewer: WriterDep,
    connection_id: IdPath,
    confirm: Annotated[str, Form(max_length=100)] = "",
    revoke: Annotated[bool, Form()] = False,
) -> Response:
    """Delete the connection (``DELETE /connections/{id}[?revoke=true]``' path) once its id
    is typed; with ``revoke`` the grant is revoked at Salesforce first, and a refusal keeps
    the connection (deleting it would leave a live grant with no token left to revoke)."""
    gateway = get_gateway(request)
    if confirm.strip() != connection_id:
        return await _back(
            request, viewer, connection_id, "Not deleted: type the connection id to confirm."
        )
    try:
        if revoke:
            await revoke_upstream(gateway, gateway.store, connection_id)
        await gateway.store.connections.delete(connection_id)
    except TokenkeepError as exc:
        return await _back(request, viewer, connection_id, f"Not deleted: {exc.message}")
    gateway.coordinator.forget(connection_id)
    gateway.log.info(
        "connection deleted", connection_id=connection_id, revoked=revoke, by="dashboard"
    )
    await gateway.store.dashboard_sessions.set_flash(
        viewer.token,
        f"Connection {connection_id} deleted"
        + (", its grant revoked at Salesforce." if revoke else "."),
    )
    return RedirectResponse(f"{PREFIX}/connections", status_code=303)
