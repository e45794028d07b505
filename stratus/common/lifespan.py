"""The ASGI lifespan protocol for a process's top-level app: start the runtime, stop it.

Kept free of imports so the lean object-store proxy process can use it without loading the
shared runtime's database layer.
"""

from __future__ import annotations

import logging

log = logging.getLogger("stratus.app")


async def serve_lifespan(runtime, receive, send) -> None:
    """Answer lifespan messages: ``runtime.start()`` on start-up (a failure is reported to the
    server, which then exits), ``runtime.stop()`` on shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await runtime.start()
            except Exception as exc:
                log.exception("start-up failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
