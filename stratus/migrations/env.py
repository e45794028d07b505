"""Alembic environment: one branch and one version table per service."""

from __future__ import annotations

import asyncio
import importlib

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config
service = config.attributes["service"]
url = config.attributes["url"]
target_metadata = importlib.import_module(f"stratus.{service}.models").Base.metadata
version_table = f"alembic_version_{service}"


def include_object(obj, name, type_, reflected, compare_to):
    # Never autogenerate drops of other branches' version tables.
    return not (type_ == "table" and name.startswith("alembic_version"))


def do_run_migrations(connection):
    context.configure(connection=connection, target_metadata=target_metadata,
                      version_table=version_table, include_object=include_object,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations():
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


asyncio.run(run_async_migrations())
