"""What the compute pieces of one process share: database, settings, quotas, bus, other services."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

import orjson

from stratus.common.db import utcnow
from stratus.compute import settings as settings_mod
from stratus.compute.quota import Quotas

NAME = "compute"


def _dumps(value) -> str:
    return orjson.dumps(value).decode()


class SerializedWrites:
    """SQLite allows one writer; concurrent write transactions in one process otherwise meet in
    SQLite's busy handler, which sleeps up to 100 ms between retries. Queueing them on an asyncio
    lock instead keeps writes back to back. Re-entrant per task, so a nested transaction in the
    same task cannot deadlock. Readers never wait."""

    def __init__(self, db):
        self._db = db
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task | None = None

    def __getattr__(self, name):
        return getattr(self._db, name)

    @contextlib.asynccontextmanager
    async def session(self):
        task = asyncio.current_task()
        if self._owner is task:
            async with self._db.session() as s:
                yield s
            return
        async with self._lock:
            self._owner = task
            try:
                async with self._db.session() as s:
                    yield s
            finally:
                self._owner = None


class ComputeState:
    def __init__(self, runtime):
        self.runtime = runtime
        self.settings = settings_mod.load(runtime.config.section(NAME))
        db = runtime.db(NAME)
        # Server rows carry a dozen JSON columns; orjson decodes them several times faster.
        dialect = db.engine.dialect
        dialect._json_deserializer = orjson.loads
        dialect._json_serializer = _dumps
        self.db = SerializedWrites(db) if db.dialect == "sqlite" else db
        self.bus = runtime.bus
        self.quotas = Quotas(self.db, self.settings.quotas)
        self.public_url = runtime.public_url
        self._manager = None
        self._image_lookup = None
        self._network = None

    @property
    def manager(self):
        if self._manager is None:
            from stratus.compute.manager import ServerManager

            self._manager = ServerManager(self)
        return self._manager

    def client(self):
        return self.runtime.client(NAME)

    @property
    def image_lookup(self):
        if self._image_lookup is None:
            from stratus.compute.images import ImageLookup

            self._image_lookup = ImageLookup(self.client().credentials)
        return self._image_lookup

    @property
    def network(self):
        if self._network is None:
            from stratus.compute.networking import NetworkAPI

            self._network = NetworkAPI(self.client())
        return self._network

    @property
    def volumes(self):
        if getattr(self, "_volumes", None) is None:
            from stratus.compute.volumes import VolumeAPI

            self._volumes = VolumeAPI(self.client())
        return self._volumes

    def is_up(self, service_row) -> bool:
        """A service is up when it is not forced down and its heartbeat is recent."""
        if service_row.forced_down:
            return False
        seen = service_row.last_seen_up
        if seen is None:
            return False
        return (utcnow() - seen) < dt.timedelta(seconds=self.settings.service_down_time)


def get_state(runtime) -> ComputeState:
    state = getattr(runtime, "_compute", None)
    if state is None:
        state = ComputeState(runtime)
        runtime._compute = state
    return state
