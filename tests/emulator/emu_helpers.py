"""Helpers for the emulator's own tests: clients bound to a source address, grants."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx

from tokenkeep.emulator import Emulator
from tokenkeep.emulator.state import App, User

TOKEN_PATH = "/services/oauth2/token"
REDIRECT = "http://localhost/callback"


def client_from(address: str) -> httpx.AsyncClient:
    """A client whose connections originate from ``address`` (a 127.0.0.x alias)."""
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address), timeout=10)


def pkce_pair(verifier: str = "v" * 64) -> tuple[str, str]:
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def password_grant(http: httpx.AsyncClient, emu: Emulator, user: User) -> dict[str, Any]:
    app = emu.apps[0]
    r = await http.post(
        emu.login_url + TOKEN_PATH,
        data={
            "grant_type": "password",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "username": user.username,
            "password": user.password,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


async def code_grant(
    http: httpx.AsyncClient, emu: Emulator, user: User, scope: str = "api refresh_token"
) -> httpx.Response:
    """Authorize headlessly (admin API), then redeem the code; returns the token response."""
    app = emu.apps[0]
    code = emu.admin.authorize(
        {
            "client_id": app.client_id,
            "username": user.username,
            "redirect_uri": REDIRECT,
            "scope": scope,
        }
    )["code"]
    return await http.post(
        emu.login_url + TOKEN_PATH,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "redirect_uri": REDIRECT,
        },
    )


async def refresh(
    http: httpx.AsyncClient, emu: Emulator, refresh_token: str, app: App | None = None
) -> httpx.Response:
    app = app or emu.apps[0]
    return await http.post(
        emu.login_url + TOKEN_PATH,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        },
    )


async def limits(http: httpx.AsyncClient, instance_url: str, token: str) -> httpx.Response:
    return await http.get(
        instance_url + "/services/data/v60.0/limits", headers={"Authorization": f"Bearer {token}"}
    )


def expired_grant(r: httpx.Response) -> None:
    """Assert the refresh failed the way a revoked/expired refresh token fails."""
    assert r.status_code == 400, r.text
    assert r.json() == {
        "error": "invalid_grant",
        "error_description": "expired access/refresh token",
    }
    assert r.headers["cache-control"] == "no-store"


def inactive_user(r: httpx.Response, error: str = "inactive_user") -> None:
    """Assert the refresh failed the way a deactivated user's refresh fails."""
    assert r.status_code == 400, r.text
    assert r.json() == {"error": error, "error_description": "user is inactive"}
    assert r.headers["cache-control"] == "no-store"


def invalid_session(r: httpx.Response, message: str = "Session expired or invalid") -> None:
    assert r.status_code == 401, r.text
    assert r.json() == [{"message": message, "errorCode": "INVALID_SESSION_ID"}]
