"""Identity's place in a Stratus process."""

from __future__ import annotations

import asyncio

from stratus.services import CatalogEntry, ServiceSpec

NAME = "identity"


def _manager(runtime):
    """One manager (and token service) per process, shared by the API and the bootstrap."""
    state = getattr(runtime, "_identity", None)
    if state is None:
        from stratus.identity.authn import TokenService
        from stratus.identity.manager import IdentityManager
        from stratus.identity.passwords import Hasher

        cfg = runtime.config.section("identity")
        hasher = Hasher(cfg["argon2_memory_kib"], cfg["argon2_time_cost"], cfg["argon2_parallelism"])
        mgr = IdentityManager(runtime.db(NAME), bus=runtime.bus, hasher=hasher,
                              token_expiration=cfg["token_expiration"],
                              allow_expired_window=cfg["allow_expired_window"],
                              max_active_keys=cfg["max_active_keys"])
        state = (mgr, TokenService(mgr))
        runtime._identity = state
    return state


def create_app(runtime):
    from stratus.identity.api import POLICY, create_app as make

    mgr, tokens = _manager(runtime)
    return make(mgr, tokens, runtime.enforcer(NAME, POLICY), runtime.config.identity_url)


def catalog_entries(runtime) -> list[tuple[str, str, str]]:
    """Every enabled service's catalog entries, with this host's public URL."""
    from stratus import services

    out = []
    for name in runtime.config.enabled_services:
        for entry in services.get(name).catalog:
            out.append((entry.type, entry.name, runtime.public_url + entry.path))
    return out


async def bootstrap(runtime) -> None:
    from stratus.identity import bootstrap as boot

    mgr, _ = _manager(runtime)
    await mgr.start()
    cfg = runtime.config
    others = [n for n in cfg.enabled_services if n != NAME]
    await boot.ensure(mgr, admin_password=runtime.admin_password, demo_password=runtime.demo_password,
                      service_password=runtime.service_password, service_users=others, region=cfg["region"],
                      catalog=catalog_entries(runtime), applied_file=cfg.state_dir / "identity-bootstrap.json")
    boot.write_client_files(cfg.state_dir, auth_url=cfg.identity_url, region=cfg["region"],
                            admin_password=runtime.admin_password, demo_password=runtime.demo_password)


async def start(runtime):
    mgr, _ = _manager(runtime)
    await mgr.start()

    async def prune_loop():
        while True:
            await asyncio.sleep(3600)
            await mgr.revocations.prune()

    task = asyncio.create_task(prune_loop())

    async def stop():
        task.cancel()

    return stop


def add_commands(sub) -> None:
    p = sub.add_parser("identity", help="identity operations")
    from stratus.cli import _common

    _common(p)
    isub = p.add_subparsers(dest="identity_command", required=True)
    isub.add_parser("rotate-keys", help="make a new token key primary; older keys keep validating")
    p.set_defaults(func=_identity_command)


def _identity_command(args) -> int:
    from stratus.cli import _apply_args_to_env, load_config, upgrade_databases
    from stratus.common import log as logmod
    from stratus.common.db import Database
    from stratus.identity.tokens import rotate

    _apply_args_to_env(args)
    cfg = load_config()
    logmod.setup(cfg["debug"])

    async def run():
        await upgrade_databases(cfg, [NAME])
        db = Database(cfg.database_url(NAME))
        key_id = await rotate(db, max_active=cfg["identity"]["max_active_keys"])
        await db.dispose()
        return key_id

    key_id = asyncio.run(run())
    print(f"new primary token key {key_id}; tokens sealed with the previous keys stay valid until they expire")
    return 0


SPEC = ServiceSpec(
    name=NAME,
    mounts=["/identity"],
    create_app=create_app,
    catalog=[CatalogEntry("identity", "keystone", "/identity")],
    health_path="/identity/v3",
    bootstrap=bootstrap,
    start=start,
    add_commands=add_commands,
)
