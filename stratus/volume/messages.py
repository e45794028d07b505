"""User messages about asynchronous failures (cinder's /messages API, 3.3+).

A volume that ends in ``error`` has no other way to tell its owner why in upstream's API; the
agent and the API record one message per failure here, kept for ``MESSAGE_TTL``.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa

from stratus.common.db import new_uuid, utcnow
from stratus.common.web import request_id_var
from stratus.volume import models as m

log = logging.getLogger("stratus.volume.messages")

MESSAGE_TTL = dt.timedelta(days=30)


async def record(db, *, project_id: str, resource_type: str, resource_uuid: str | None, action: str,
                 detail: str) -> None:
    """Store one ERROR message; never raises (a lost message must not hide the failure itself)."""
    rid = request_id_var.get()
    now = utcnow()
    try:
        async with db.session() as s:
            s.add(m.Message(id=new_uuid(), project_id=project_id, resource_type=resource_type,
                            resource_uuid=resource_uuid,
                            event_id=f"VOLUME_{resource_type}_{action.upper().replace(' ', '_')}_FAILED",
                            message_level="ERROR", user_message=f"{action}: {detail}"[:4000],
                            request_id=rid if rid != "-" else None, created_at=now, expires_at=now + MESSAGE_TTL))
            await s.execute(sa.delete(m.Message).where(m.Message.expires_at < now))
    except Exception:
        log.exception("could not record a user message about %s %s", resource_type, resource_uuid)
