"""Who may see the dashboard, and which POSTs are the dashboard's own.

Authentication: a bearer token (``NAQ_DASHBOARD_TOKEN``; a browser gives it once on
the login form and then carries a cookie derived from it, never the token itself),
or basic auth (``NAQ_DASHBOARD_USER`` and ``NAQ_DASHBOARD_PASSWORD``), or both. With
neither, the dashboard serves loopback only (``naq dashboard`` refuses another host).

CSRF: every page sets a random ``naq_csrf`` cookie (``SameSite=Strict``, not readable
by scripts) and puts the same value in each form; a POST whose form field does not
match the cookie, or whose ``Origin`` is another site, is refused with 403 before it
is read further. A page of another site can neither read the cookie nor set the
field, so it cannot make a logged-in browser act.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from naq.settings import Settings

CSRF_COOKIE = "naq_csrf"
CSRF_FIELD = "csrf"
SESSION_COOKIE = "naq_session"
OPEN_PATHS = ("/static/", "/login")


def session_value(token: str) -> str:
    """What the session cookie holds: derived from the token, so the cookie is not the
    token and a changed token ends every session."""
    return hmac.new(token.encode(), b"naq-dashboard-session", hashlib.sha256).hexdigest()


def equal(a: str | None, b: str | None) -> bool:
    """Constant-time comparison; a missing side is never equal."""
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


class Guard:
    """The checks every request passes, built from the settings once."""

    def __init__(self, settings: Settings) -> None:
        self.token = settings.dashboard_token
        self.user = settings.dashboard_user
        self.password = settings.dashboard_password

    @property
    def required(self) -> bool:
        return bool(self.token or (self.user and self.password))

    def authenticated(self, request: Request) -> bool:
        if not self.required:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if self.token:
            if scheme.lower() == "bearer" and equal(value.strip(), self.token):
                return True
            if equal(request.cookies.get(SESSION_COOKIE), session_value(self.token)):
                return True
        if self.user and self.password and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return equal(user, self.user) & equal(password, self.password)
        return False

    def refusal(self, request: Request) -> Response:
        if (
            self.token
            and request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
        ):
            return RedirectResponse("/login", status_code=303)
        headers = {"WWW-Authenticate": 'Basic realm="naq"'} if self.user else {}
        return PlainTextResponse("authentication required", status_code=401, headers=headers)


def csrf_ok(request: Request, form: dict[str, str]) -> bool:
    """The form carries the cookie's CSRF value, and the request comes from this site."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        return False
    return equal(form.get(CSRF_FIELD), request.cookies.get(CSRF_COOKIE))


def csrf_token(request: Request) -> str:
    """The request's CSRF value: its cookie's, or a new one the response will set."""
    found = request.cookies.get(CSRF_COOKIE)
    if found and len(found) == 64:
        return found
    fresh: str = getattr(request.state, "csrf_new", "") or secrets.token_hex(32)
    request.state.csrf_new = fresh
    return fresh


def middleware(
    guard: Guard,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Authentication first, then the CSRF cookie on the way out."""

    async def dispatch(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if not path.startswith(OPEN_PATHS) and not guard.authenticated(request):
            return guard.refusal(request)
        response = await call_next(request)
        fresh = getattr(request.state, "csrf_new", None)
        if fresh:
            response.set_cookie(CSRF_COOKIE, fresh, httponly=True, samesite="strict", path="/")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        )
        return response

    return dispatch
