"""API keys for the REST API: created and revoked from the command line, checked on every request.

A key is ``emk_<id>_<secret>``: the id (8 hex characters) is public — it names the key in
``emolens keys list`` and in logs — and the secret (43 URL-safe characters, 256 random bits) is
shown once, at creation. Only the SHA-256 of the whole key is stored, so a copy of the database
gives no usable key. A plain hash (not a slow password hash) is the right tool here: the secret is
random, not chosen by a person, so there is nothing to guess.

Scopes are ordered: ``read`` < ``write`` (store feedback) < ``admin`` (change models, delete).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from emolens.core.errors import EmoLensError, NotFoundError
from emolens.store.db import Base, session

SCOPES = ("read", "write", "admin")
PREFIX = "emk"
_KEY_RE = re.compile(rf"^{PREFIX}_([0-9a-f]{{8}})_([A-Za-z0-9_-]{{20,64}})$")


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass
class ApiKey:
    """A stored key as shown to people: never the secret."""

    key_id: str
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        """Whether this key may do what ``scope`` needs (admin ⊇ write ⊇ read)."""
        return self.active and SCOPES.index(self.scope) >= SCOPES.index(scope)

    @classmethod
    def from_row(cls, row: ApiKeyRow) -> ApiKey:
        return cls(row.key_id, row.name, row.scope, row.created_at, row.revoked_at)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        d["revoked_at"] = self.revoked_at.isoformat() if self.revoked_at else None
        d["active"] = self.active
        return d


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    def __init__(self, url: str | None = None):
        self.url = url

    def create(self, name: str, scope: str = "write") -> tuple[ApiKey, str]:
        """A new key; returns it and the full token, which is not stored and cannot be shown again."""
        name = name.strip()
        if not name or len(name) > 128:
            raise EmoLensError("a key needs a name of 1 to 128 characters (who or what uses it)")
        if scope not in SCOPES:
            raise EmoLensError(f"unknown scope {scope!r}; use one of: {', '.join(SCOPES)}")
        with session(self.url) as s:
            taken = set(s.scalars(select(ApiKeyRow.key_id)))
            key_id = secrets.token_hex(4)
            while key_id in taken:
                key_id = secrets.token_hex(4)
            token = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
            row = ApiKeyRow(
                key_id=key_id,
                name=name,
                scope=scope,
                secret_hash=_hash(token),
                created_at=datetime.now(UTC),
                revoked_at=None,
            )
            s.add(row)
        return ApiKey.from_row(row), token

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        q = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if not include_revoked:
            q = q.where(ApiKeyRow.revoked_at.is_(None))
        with session(self.url) as s:
            return [ApiKey.from_row(r) for r in s.scalars(q)]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by its public id (or the whole token); revoking twice is harmless."""
        m = _KEY_RE.match(key_id.strip())
        key_id = m.group(1) if m else key_id.strip()
        with session(self.url) as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_id == key_id))
            if row is None:
                raise NotFoundError(f"no API key with id {key_id!r} (see `emolens keys list`)")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            return ApiKey.from_row(row)

    def verify(self, token: str) -> ApiKey | None:
        """The key this token belongs to, revoked or not; None when the token is not one of ours."""
        m = _KEY_RE.match(token.strip())
        if not m:
            return None
        with session(self.url) as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_id == m.group(1)))
            if row is None or not hmac.compare_digest(row.secret_hash, _hash(token.strip())):
                return None
            return ApiKey.from_row(row)

    def count(self) -> int:
        return len(self.list(include_revoked=False))
