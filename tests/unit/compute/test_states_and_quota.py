"""Status mapping, settings validation, and quota reservations under concurrency (SQLite)."""

from __future__ import annotations

import asyncio

import pytest

from stratus.common.db import Database
from stratus.compute import models as m
from stratus.compute import settings, states
from stratus.compute.quota import QuotaExceeded, Quotas
from stratus.config import ConfigError


@pytest.mark.parametrize("vm,task,expected", [
    ("building", "scheduling", "BUILD"), ("active", None, "ACTIVE"), ("active", "rebooting", "REBOOT"),
    ("active", "rebooting_hard", "HARD_REBOOT"), ("stopped", None, "SHUTOFF"), ("active", "resize_prep", "RESIZE"),
    ("resized", None, "VERIFY_RESIZE"), ("resized", "resize_reverting", "REVERT_RESIZE"),
    ("error", "rebuilding", "REBUILD"), ("paused", None, "PAUSED"), ("suspended", None, "SUSPENDED"),
    ("rescued", None, "RESCUE"), ("deleted", None, "DELETED"), ("weird", None, "UNKNOWN"),
])
def test_status(vm, task, expected):
    assert states.status(vm, task) == expected


def test_settings_validation():
    assert settings.load({"driver": "fake", "fake_hosts": 3}).fake_hosts == 3
    with pytest.raises(ConfigError, match="compute.driver"):
        settings.load({"driver": "xen"})
    with pytest.raises(ConfigError, match="compute.nope"):
        settings.load({"nope": 1})
    with pytest.raises(ConfigError, match="compute.quotas.cores"):
        settings.load({"quotas": {"cores": "many"}})


def test_concurrent_reservations_never_exceed(tmp_path):
    async def run():
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/q.sqlite")
        async with db.engine.begin() as conn:
            await conn.run_sync(m.Base.metadata.create_all)
        quotas = Quotas(db, settings.DEFAULT_QUOTAS)
        await quotas.ensure_row("p")
        limits = {"instances": 5, "cores": 100, "ram": 100000}

        async def one():
            try:
                async with db.session() as s:
                    await quotas.reserve(s, "p", {"instances": 1, "cores": 1, "ram": 512}, limits)
                    await asyncio.sleep(0.01)  # hold the transaction open a little
                return True
            except QuotaExceeded as exc:
                assert "Quota exceeded for instances: Requested 1, but already used 5 of 5" in str(exc)
                return False

        results = await asyncio.gather(*(one() for _ in range(20)))
        usage = await quotas.usage("p")
        await db.dispose()
        return results, usage

    results, usage = asyncio.run(run())
    assert results.count(True) == 5
    assert usage["instances"] == 5 and usage["ram"] == 2560


def test_name_regex_sql_prefilter():
    from stratus.compute.api.servers import _literal_like

    assert _literal_like("^fill-") == "fill-%"
    assert _literal_like("web") == "%web%"
    assert _literal_like("^exact$") == "exact"
    assert _literal_like("a_b%") == "%a\\_b\\%%"
    assert _literal_like("page-[13]") is None and _literal_like("^.*x") is None
