"""Revoked tokens: events kept in the database and mirrored in memory for fast checks.

An event revokes every token whose fields match all of the event's non-null fields and that
was issued at or before ``issued_before``. Writes go to the database and to this process's list at
once; other processes (more workers, more hosts) pick new events up by polling the highest
event id at most every ``poll_interval`` seconds, and are told at once over the bus as well.
"""

from __future__ import annotations

import datetime as dt
import time

import sqlalchemy as sa

from stratus.common.db import Database, utcnow
from stratus.identity.models import RevocationEvent


class RevocationList:
    def __init__(self, db: Database, *, poll_interval: float = 0.1, keep_seconds: float = 172800 + 3600):
        self.db = db
        self.poll_interval = poll_interval
        self.keep_seconds = keep_seconds
        self.events: list[tuple[str | None, str | None, str | None, str | None, float]] = []
        self.by_audit: dict[str, float] = {}
        self.last_id = 0
        self.checked_at = 0.0
        # Bumped whenever the list changes; validation caches key on it.
        self.generation = 0

    async def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.checked_at < self.poll_interval:
            return
        self.checked_at = now
        async with self.db.reader() as s:
            rows = (await s.execute(sa.select(RevocationEvent).where(RevocationEvent.id > self.last_id)
                                    .order_by(RevocationEvent.id))).scalars().all()
        for r in rows:
            self._add(r)

    def _add(self, r: RevocationEvent) -> None:
        before = r.issued_before.replace(tzinfo=dt.timezone.utc).timestamp()
        if r.audit_id and not (r.user_id or r.project_id or r.domain_id):
            self.by_audit[r.audit_id] = max(before, self.by_audit.get(r.audit_id, 0))
        else:
            self.events.append((r.audit_id, r.user_id, r.project_id, r.domain_id, before))
        self.last_id = max(self.last_id, r.id)
        self.generation += 1

    async def revoke(self, *, audit_id=None, user_id=None, project_id=None, domain_id=None,
                     issued_before: dt.datetime | None = None) -> None:
        # Tokens carry microseconds; an event revokes everything issued up to now inclusive.
        event = RevocationEvent(audit_id=audit_id, user_id=user_id, project_id=project_id,
                                domain_id=domain_id, issued_before=issued_before or utcnow())
        async with self.db.session() as s:
            s.add(event)
        self._add(event)

    def is_revoked(self, *, audit_ids: list[str], user_id: str, project_id: str | None,
                   domain_id: str | None, issued_at: float) -> bool:
        for a in audit_ids:
            before = self.by_audit.get(a)
            if before is not None and issued_at <= before + 1e-6:
                return True
        for ev_audit, ev_user, ev_project, ev_domain, before in self.events:
            if issued_at > before + 1e-6:
                continue
            if ev_audit is not None and ev_audit not in audit_ids:
                continue
            if ev_user is not None and ev_user != user_id:
                continue
            if ev_project is not None and ev_project != project_id:
                continue
            if ev_domain is not None and ev_domain != domain_id:
                continue
            return True
        return False

    async def prune(self) -> None:
        cutoff = utcnow() - dt.timedelta(seconds=self.keep_seconds)
        async with self.db.session() as s:
            await s.execute(sa.delete(RevocationEvent).where(RevocationEvent.revoked_at < cutoff))
