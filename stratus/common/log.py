"""Logging: every line carries the request id; ``--debug`` adds SQL and bus traffic."""

from __future__ import annotations

import logging
import sys

from stratus.common.requestid import request_id_var  # not .web: that would load Starlette into every process


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def setup(debug: bool = False, stream=sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Third-party chatter stays quiet unless it is the traffic --debug promises to show.
    for noisy in ("httpx", "httpcore", "aiormq", "aio_pika", "asyncio", "uvicorn.access", "multipart", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO if debug else logging.WARNING)
    logging.getLogger("stratus.bus").setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("stratus.api").setLevel(logging.INFO if debug else logging.WARNING)
