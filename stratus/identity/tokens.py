"""Non-persistent tokens: the token itself carries who, scope and lifetime, sealed with AES-GCM.

Nothing is written per token, so issuing costs no database write and any API host holding the
keys can validate. Keys live in the identity database (table signing_keys) so every host of a
fleet shares them without copying files; ``stratus identity rotate-keys`` adds a new primary and
keeps the previous ones for validation, pruning beyond ``identity.max_active_keys``.

Wire form: urlsafe-base64( version(1) | key id(4) | nonce(12) | AES-GCM(msgpack payload) ).
"""

from __future__ import annotations

import base64
import os
import struct
import time
from dataclasses import dataclass, field

import msgpack
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stratus.common.db import Database
from stratus.identity.models import SigningKey

FORMAT_VERSION = 1
_HEADER = struct.Struct(">BI")

METHOD_CODES = {"password": 1, "token": 2, "application_credential": 4, "ec2credential": 8}


@dataclass(slots=True)
class TokenData:
    user_id: str
    methods: list[str]
    scope_kind: str  # 'project', 'domain', 'system' or 'unscoped'
    scope_id: str | None
    issued_at: float  # epoch seconds (microsecond precision)
    expires_at: float
    audit_ids: list[str] = field(default_factory=list)
    app_cred_id: str | None = None

    def pack(self) -> bytes:
        mask = 0
        for m in self.methods:
            mask |= METHOD_CODES[m]
        kind = {"project": "p", "domain": "d", "system": "s", "unscoped": "u"}[self.scope_kind]
        return msgpack.packb([self.user_id, mask, kind, self.scope_id, int(self.issued_at * 1e6),
                              int(self.expires_at * 1e6), self.audit_ids, self.app_cred_id])

    @classmethod
    def unpack(cls, raw: bytes) -> "TokenData":
        user_id, mask, kind, scope_id, issued, expires, audit_ids, app_cred = msgpack.unpackb(raw)
        methods = [m for m, code in METHOD_CODES.items() if mask & code]
        scope_kind = {"p": "project", "d": "domain", "s": "system", "u": "unscoped"}[kind]
        return cls(user_id, methods, scope_kind, scope_id, issued / 1e6, expires / 1e6, list(audit_ids), app_cred)


def new_audit_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


class InvalidToken(Exception):
    pass


class KeyRing:
    """The process's copy of the token keys, reloaded from the database when needed."""

    RELOAD_INTERVAL = 60.0

    def __init__(self, db: Database, purpose: str = "token"):
        self.db = db
        self.purpose = purpose
        self.keys: dict[int, AESGCM] = {}
        self.primary_id: int | None = None
        self.loaded_at = 0.0

    async def load(self) -> None:
        async with self.db.reader() as s:
            rows = (await s.execute(sa.select(SigningKey).where(SigningKey.purpose == self.purpose))).scalars().all()
        self.keys = {r.id: AESGCM(base64.b64decode(r.key)) for r in rows}
        primaries = [r.id for r in rows if r.state == "primary"]
        self.primary_id = max(primaries) if primaries else None
        self.loaded_at = time.monotonic()

    async def ensure(self) -> None:
        if self.primary_id is None or time.monotonic() - self.loaded_at > self.RELOAD_INTERVAL:
            await self.load()
        if self.primary_id is None:
            await rotate(self.db, purpose=self.purpose, max_active=3)
            await self.load()

    def seal(self, plaintext: bytes) -> str:
        key_id = self.primary_id
        header = _HEADER.pack(FORMAT_VERSION, key_id)
        nonce = os.urandom(12)
        sealed = self.keys[key_id].encrypt(nonce, plaintext, header)
        return base64.urlsafe_b64encode(header + nonce + sealed).rstrip(b"=").decode()

    async def open(self, token: str) -> bytes:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            version, key_id = _HEADER.unpack_from(raw)
        except (ValueError, struct.error):
            raise InvalidToken("malformed token") from None
        if version != FORMAT_VERSION or len(raw) < _HEADER.size + 12 + 16:
            raise InvalidToken("malformed token")
        key = self.keys.get(key_id)
        if key is None:
            # Another host may have rotated keys since we loaded them.
            await self.load()
            key = self.keys.get(key_id)
            if key is None:
                raise InvalidToken("token was sealed with an unknown or retired key")
        try:
            return key.decrypt(raw[5:17], raw[17:], raw[:5])
        except InvalidTag:
            raise InvalidToken("token failed authentication") from None


async def rotate(db: Database, *, purpose: str = "token", max_active: int = 3) -> int:
    """Make a new primary key, demote the old one, and retire keys beyond ``max_active``."""
    async with db.session() as s:
        rows = (await s.execute(sa.select(SigningKey).where(SigningKey.purpose == purpose)
                                .order_by(SigningKey.id))).scalars().all()
        next_id = (await s.scalar(sa.select(sa.func.max(SigningKey.id)))) or 0
        for r in rows:
            if r.state == "primary":
                r.state = "secondary"
        new = SigningKey(id=next_id + 1, key=base64.b64encode(AESGCM.generate_key(256)).decode(),
                         state="primary", purpose=purpose)
        s.add(new)
        keep = max(1, max_active - 1)
        for r in rows[:-keep] if len(rows) > keep else []:
            await s.delete(r)
        return new.id


class CredentialCipher:
    """Encrypts stored credential blobs (EC2 secrets) with a key that is not rotated away."""

    def __init__(self, db: Database):
        self.ring = KeyRing(db, purpose="credential")

    async def encrypt(self, text: str) -> str:
        await self.ring.ensure()
        return self.ring.seal(text.encode())

    async def decrypt(self, blob: str) -> str:
        await self.ring.ensure()
        return (await self.ring.open(blob)).decode()
