"""Who may act through the dashboard, and proof that a form was sent by the dashboard itself.

Credentials come from the environment only (never from a page or a URL): a token
(``SONIQ_DASHBOARD_TOKEN``, sent as ``Authorization: Bearer ...`` or as the basic-auth
password) and/or a user and password (``SONIQ_DASHBOARD_USER``, ``SONIQ_DASHBOARD_PASSWORD``).
Every comparison is constant-time. When credentials are configured every request needs them;
actions need them always, so ``actions=True`` without credentials refuses to start.

Cross-site request forgery: each browser gets a random token in a ``SameSite=Strict`` cookie,
every action form carries it back in a hidden field, and a POST whose field does not match its
cookie, or whose ``Origin`` names another host, is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

CSRF_COOKIE = "soniq_csrf"
CSRF_FIELD = "csrf"
FLASH_COOKIE = "soniq_flash"


@dataclass(frozen=True)
class Credentials:
    token: str | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        return cls(
            token=env.get("SONIQ_DASHBOARD_TOKEN") or None,
            user=env.get("SONIQ_DASHBOARD_USER") or None,
            password=env.get("SONIQ_DASHBOARD_PASSWORD") or None,
        )

    @property
    def configured(self) -> bool:
        return bool(self.token or (self.user and self.password))

    def check(self, authorization: str | None) -> str | None:
        """The name of who is asking, or None when the header proves nothing."""
        if not authorization or not self.configured:
            return None
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token:
            return "token" if _same(value.strip(), self.token) else None
        if scheme != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        # Both comparisons always run, so timing says nothing about which part was wrong.
        if self.user and self.password:
            ok = _same(user, self.user) & _same(password, self.password)
            if ok:
                return user
        if self.token and _same(password, self.token):
            return user or "token"
        return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, field: str | None) -> bool:
    return bool(cookie and field) and _same(str(field), str(cookie))


def same_origin(origin: str | None, host: str | None) -> bool:
    """An absent Origin passes (old browsers, curl); a present one must name this host."""
    if not origin or origin == "null":
        return origin is None
    return bool(host) and origin.split("://", 1)[-1].rstrip("/") == host
