"""Block storage's place in a Stratus process: the API at /volume and a volume agent per host."""

from __future__ import annotations

import asyncio

from stratus.services import CatalogEntry, ServiceSpec

NAME = "volume"


def _settings(runtime) -> dict:
    state = getattr(runtime, "_volume_settings", None)
    if state is None:
        from stratus.volume import settings

        state = settings.load(runtime.config)
        runtime._volume_settings = state
    return state


def _manager(runtime):
    mgr = getattr(runtime, "_volume_manager", None)
    if mgr is None:
        from stratus.volume.manager import VolumeManager

        mgr = VolumeManager(runtime.db(NAME), runtime.bus, _settings(runtime), client=runtime.client(NAME))
        runtime._volume_manager = mgr
    return mgr


def create_app(runtime):
    from stratus.volume.api import POLICY, create_app as make

    return make(_manager(runtime), runtime.enforcer(NAME, POLICY), runtime.validator(NAME),
                runtime_client=runtime.client(NAME))


async def bootstrap(runtime) -> None:
    await _manager(runtime).ensure_default_type()


async def _start_agent(runtime):
    from stratus.volume.agent import VolumeAgent

    agent = VolumeAgent(db=runtime.db(NAME), bus=runtime.bus, settings=_settings(runtime),
                        client=runtime.client(NAME))
    await agent.start()
    return agent


async def start(runtime):
    """`stratus up`: this host is also a storage host."""
    await _manager(runtime).ensure_default_type()
    if not _settings(runtime)["run_agent"]:
        return None
    agent = await _start_agent(runtime)
    return agent.stop


def add_commands(sub) -> None:
    p = sub.add_parser("volume-agent", help="run the volume agent of this storage host (no API)")
    from stratus.cli import _common

    _common(p)
    p.set_defaults(func=_agent_command)


def _agent_command(args) -> int:
    from stratus.cli import _apply_args_to_env, load_config, upgrade_databases
    from stratus.common import log as logmod
    from stratus.runtime import Runtime

    _apply_args_to_env(args)
    cfg = load_config()
    logmod.setup(cfg["debug"])

    async def run():
        await upgrade_databases(cfg, [NAME])
        runtime = Runtime(cfg, [])
        await runtime.bus.start()
        agent = await _start_agent(runtime)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"volume agent {agent.host} running; Ctrl-C stops it", flush=True)
        await stop.wait()
        await agent.stop()
        await runtime.stop()

    asyncio.run(run())
    return 0


SPEC = ServiceSpec(
    name=NAME,
    mounts=["/volume"],
    create_app=create_app,
    catalog=[CatalogEntry("block-storage", "cinder", "/volume/v3/%(project_id)s"),
             CatalogEntry("volumev3", "cinderv3", "/volume/v3/%(project_id)s")],
    health_path="/volume/v3/",
    bootstrap=bootstrap,
    start=start,
    add_commands=add_commands,
)
