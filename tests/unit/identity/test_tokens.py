import base64
import datetime as dt
import time

import pytest

from stratus.common import db as dbmod
from stratus.identity.revocation import RevocationList
from stratus.identity.tokens import InvalidToken, KeyRing, TokenData, new_audit_id, rotate


@pytest.fixture
async def database(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/identity.sqlite"
    await dbmod.upgrade("identity", url)
    d = dbmod.Database(url)
    yield d
    await d.dispose()


def sample(**kw) -> TokenData:
    now = time.time()
    base = dict(user_id="u" * 32, methods=["password"], scope_kind="project", scope_id="p" * 32,
                issued_at=now, expires_at=now + 3600, audit_ids=[new_audit_id()], app_cred_id=None)
    base.update(kw)
    return TokenData(**base)


def test_payload_round_trip():
    t = sample(methods=["password", "token"], scope_kind="system", scope_id="all")
    back = TokenData.unpack(t.pack())
    assert back.user_id == t.user_id and back.methods == ["password", "token"] and back.scope_kind == "system"
    assert abs(back.issued_at - t.issued_at) < 1e-5


async def test_seal_open_tamper_and_rotation(database):
    ring = KeyRing(database)
    await ring.ensure()
    token = ring.seal(sample().pack())
    assert len(token) < 260
    assert TokenData.unpack(await ring.open(token)).user_id == "u" * 32
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-1] ^= 1
    with pytest.raises(InvalidToken):
        await ring.open(base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode())
    with pytest.raises(InvalidToken):
        await ring.open("not-a-token")
    # After rotation, old tokens still open (another host's ring reloads), new ones use the new key.
    await rotate(database, max_active=3)
    other = KeyRing(database)
    await other.ensure()
    assert TokenData.unpack(await other.open(token)).user_id == "u" * 32
    assert other.primary_id != ring.primary_id
    # Rotating past max_active retires the oldest key: its tokens stop validating.
    await rotate(database, max_active=3)
    await rotate(database, max_active=3)
    fresh = KeyRing(database)
    await fresh.ensure()
    with pytest.raises(InvalidToken, match="retired"):
        await fresh.open(token)


async def test_revocation_matching(database):
    rl = RevocationList(database, poll_interval=0)
    t = sample()
    kw = dict(audit_ids=t.audit_ids, user_id=t.user_id, project_id=t.scope_id, domain_id=None,
              issued_at=t.issued_at)
    assert not rl.is_revoked(**kw)
    await rl.revoke(project_id="other")
    assert not rl.is_revoked(**kw)
    await rl.revoke(user_id=t.user_id)
    assert rl.is_revoked(**kw)
    # A token issued after the event is fine.
    later = dict(kw, issued_at=time.time() + 1)
    assert not rl.is_revoked(**later)
    # Another process sees the events from the database.
    other = RevocationList(database, poll_interval=0)
    await other.refresh(force=True)
    assert other.is_revoked(**kw) and other.generation >= 2
    # An audit-id event revokes that token chain only.
    rl2 = RevocationList(database, poll_interval=0)
    t2 = sample(user_id="x" * 32)
    kw2 = dict(audit_ids=t2.audit_ids, user_id=t2.user_id, project_id=t2.scope_id, domain_id=None,
               issued_at=t2.issued_at)
    await rl2.refresh(force=True)
    assert not rl2.is_revoked(**kw2)
    await rl2.revoke(audit_id=t2.audit_ids[0])
    assert rl2.is_revoked(**kw2)
    assert not rl2.is_revoked(**dict(kw2, audit_ids=[new_audit_id()]))
