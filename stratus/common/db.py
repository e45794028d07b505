"""State in SQL: one async engine per service schema, SQLite (WAL) by default, MySQL/PostgreSQL by URL.

Each service owns its own schema (SQLite file, MySQL database or PostgreSQL database) so that
services never share tables, and its own Alembic branch (``stratus db upgrade``).
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import logging
import re
import threading
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

log = logging.getLogger("stratus.db")


def new_id() -> str:
    """A 32-hex-digit id, the form OpenStack uses for most resources."""
    return uuid.uuid4().hex


def new_uuid() -> str:
    """A dashed UUID, the form nova/cinder/glance/neutron use for their resources."""
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class UTCDateTime(sa.types.TypeDecorator):
    """Naive-UTC datetimes in every back end (SQLite keeps no zone; we never store local time)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value


def make_base() -> type[DeclarativeBase]:
    """A declarative base with its own MetaData, one per service."""

    class Base(DeclarativeBase):
        type_annotation_map = {dt.datetime: UTCDateTime(), dict: sa.JSON, list: sa.JSON}

    return Base


def _is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


class Database:
    """One service's connection to its schema."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10):
        self.url = url
        kwargs: dict = {"echo": echo, "future": True}
        if _is_sqlite(url):
            path = make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=20, pool_pre_ping=True, pool_recycle=3600)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if _is_sqlite(url):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error."""
        async with self.sessionmaker() as session:
            async with session.begin():
                yield session

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


async def create_database_if_missing(url: str) -> None:
    """MySQL/PostgreSQL: create the service's database when it does not exist yet."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return
    name = u.database
    if backend == "postgresql":
        server = u.set(database="postgres")
        engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            exists = await conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if not exists:
                await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    elif backend in ("mysql", "mariadb"):
        server = u.set(database="")
        engine = create_async_engine(server)
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4"))
    else:
        return
    await engine.dispose()


async def drop_database(url: str) -> None:
    """Tests: remove a MySQL/PostgreSQL database (or SQLite file) created for a run."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        if u.database and u.database != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(u.database + suffix).unlink(missing_ok=True)
        return
    name = u.database
    if backend == "postgresql":
        engine = create_async_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        engine = create_async_engine(u.set(database=""))
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    await engine.dispose()


def _alembic_config(service: str, url: str):
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "migrations"))
    cfg.set_main_option("version_locations", str(Path(__file__).resolve().parent.parent / "migrations" / "versions"))
    cfg.attributes["service"] = service
    cfg.attributes["url"] = url
    return cfg


_ALEMBIC_LOCK = threading.Lock()


def _upgrade_sync(service: str, url: str) -> None:
    from alembic import command

    # Alembic's migration context is process-global: one upgrade at a time.
    with _ALEMBIC_LOCK:
        command.upgrade(_alembic_config(service, url), f"{service}@head")


_HEADS: dict[str, str] | None = None


def migration_heads() -> dict[str, str]:
    """The newest revision of each service's branch, read once per process."""
    global _HEADS
    with _ALEMBIC_LOCK:
        return _heads_locked()


def _heads_locked() -> dict[str, str]:
    global _HEADS
    if _HEADS is None:
        try:
            _HEADS = _heads_from_headers()
        except ValueError:
            _HEADS = _heads_from_alembic()
    return _HEADS


_HEADER = re.compile(r"^(revision|down_revision|branch_labels)\s*=\s*(.+)$", re.M)


def _heads_from_headers() -> dict[str, str]:
    """Branch heads from the revision headers of our migration files, without importing Alembic
    (loading Alembic's script directory costs about a second of start-up)."""
    revisions: dict[str, tuple[str | None, tuple]] = {}
    for path in (Path(__file__).resolve().parent.parent / "migrations" / "versions").glob("*.py"):
        fields = {k: ast.literal_eval(v.strip()) for k, v in _HEADER.findall(path.read_text())}
        if "revision" not in fields:
            raise ValueError(f"{path} has no revision header")
        down = fields.get("down_revision")
        if isinstance(down, (tuple, list)):
            raise ValueError("merge revisions need Alembic")
        labels = fields.get("branch_labels") or ()
        revisions[fields["revision"]] = (down, tuple([labels] if isinstance(labels, str) else labels))
    children = {down for down, _ in revisions.values() if down}
    heads = {}
    for rev in revisions:
        if rev in children:
            continue
        base = rev
        while revisions[base][0]:
            base = revisions[base][0]
        for label in revisions[base][1] + revisions[rev][1]:
            heads[label] = rev
    return heads


def _heads_from_alembic() -> dict[str, str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config("", ""))
    heads = {}
    for rev in script.get_revisions("heads"):
        base = rev
        while base.down_revision:
            base = script.get_revision(base.down_revision)
        for label in (rev.branch_labels or set()) | (base.branch_labels or set()):
            heads[label] = rev.revision
    return heads


async def current_revision(service: str, url: str) -> str | None:
    """The revision a service's schema is at, or None when it has none (or does not exist)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(sa.text(f"SELECT version_num FROM alembic_version_{service}"))
    except Exception:
        return None
    finally:
        await engine.dispose()


async def upgrade(service: str, url: str) -> None:
    """Bring one service's schema to its newest migration.

    Reading the version table is cheap; Alembic (which loads every migration script and runs its
    own event loop) only runs when the schema is behind, so a restart costs milliseconds.
    """
    head = await asyncio.get_running_loop().run_in_executor(None, lambda: migration_heads().get(service))
    if head is not None and await current_revision(service, url) == head:
        return
    await create_database_if_missing(url)
    # Alembic is synchronous and runs its own event loop for async engines: keep it off ours.
    await asyncio.get_running_loop().run_in_executor(None, _upgrade_sync, service, url)


def autogenerate(service: str, message: str) -> None:
    """Developers: write a new migration for a service from the difference between its models
    and the schema its existing migrations build (against a throwaway SQLite file)."""
    import shutil
    import tempfile

    from alembic import command

    migrations = Path(__file__).resolve().parent.parent / "migrations"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/gen.sqlite"
        if service in migration_heads():
            cfg = _alembic_config(service, url)
            command.upgrade(cfg, f"{service}@head")
            command.revision(cfg, message=message, autogenerate=True, head=f"{service}@head")
            return
        # A new branch: Alembic refuses to autogenerate while other branches' heads are not
        # applied, so generate it in a scratch script directory holding only this branch.
        scratch = Path(tmp) / "migrations"
        (scratch / "versions").mkdir(parents=True)
        for name in ("env.py", "script.py.mako"):
            shutil.copy(migrations / name, scratch / name)
        cfg = _alembic_config(service, url)
        cfg.set_main_option("script_location", str(scratch))
        cfg.set_main_option("version_locations", str(scratch / "versions"))
        command.revision(cfg, message=message, autogenerate=True, head="base", branch_label=service,
                         rev_id=f"{service}_0001")
        for generated in (scratch / "versions").glob("*.py"):
            shutil.move(str(generated), migrations / "versions" / generated.name)
            print(f"wrote {migrations / 'versions' / generated.name}")
