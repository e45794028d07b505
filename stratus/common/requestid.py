"""The current request's id, shared by the HTTP layer, the logs and the bus.

A context variable, so that it follows a request through awaits, into bus messages (the bus
carries it to the agent that handles the work) and into every log line.
"""

from __future__ import annotations

import contextvars

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
