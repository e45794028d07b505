"""Compute's place in a Stratus process: the API, the scheduler and (in `stratus up`) a compute agent."""

from __future__ import annotations

import asyncio
import logging

from stratus.services import CatalogEntry, ServiceSpec

NAME = "compute"
log = logging.getLogger("stratus.compute")


def create_app(runtime):
    from stratus.compute.api import POLICY, create_app as make
    from stratus.compute.state import get_state

    state = get_state(runtime)
    return make(state, runtime.enforcer(NAME, POLICY), lambda: runtime.validator(NAME))


async def bootstrap(runtime) -> None:
    from stratus.compute.api.flavors import ensure_default_flavors
    from stratus.compute.state import get_state

    await ensure_default_flavors(get_state(runtime).db)


async def start(runtime):
    """The scheduler, and unless agents run elsewhere, this host's compute agent(s)."""
    from stratus.compute.scheduler import Scheduler
    from stratus.compute.state import get_state

    state = get_state(runtime)
    scheduler = Scheduler(state)
    await scheduler.start()
    agents = None
    if state.settings.local_agent:
        from stratus.compute.agent import AgentGroup, AgentStartError

        try:
            agents = await AgentGroup.from_settings(state)
            await agents.start()
        except AgentStartError as exc:
            # No silent fallback to the fake driver: the cloud runs without a compute host and the
            # scheduler's fault says so on every server create.
            log.error("the compute agent of this host did not start: %s", exc)
            agents = None
        except Exception:
            log.exception("the compute agent of this host did not start")
            agents = None

    async def stop():
        if agents is not None:
            await agents.stop()
        await scheduler.stop()

    return stop


def add_commands(sub) -> None:
    from stratus.cli import _common

    p = sub.add_parser("compute-agent", help="run compute agents (one per host, or many simulated hosts)")
    _common(p)
    p.add_argument("--driver", choices=["fake", "libvirt"], help="virt driver (default: compute.driver)")
    p.add_argument("--fake-hosts", type=int, help="simulated hosts in this process (fake driver)")
    p.add_argument("--host", dest="agent_host", help="host name (default: compute.host or this machine's name); "
                   "with --fake-hosts N the hosts are <host>-0 .. <host>-(N-1)")
    p.set_defaults(func=_agent_command)


def _agent_command(args) -> int:
    import os
    import signal

    from stratus.cli import _apply_args_to_env, load_config, upgrade_databases
    from stratus.common import log as logmod

    _apply_args_to_env(args)
    if args.driver:
        os.environ["STRATUS_COMPUTE__DRIVER"] = args.driver
    if args.fake_hosts:
        os.environ["STRATUS_COMPUTE__FAKE_HOSTS"] = str(args.fake_hosts)
    if args.agent_host:
        os.environ["STRATUS_COMPUTE__HOST"] = args.agent_host
    cfg = load_config()
    logmod.setup(cfg["debug"])

    async def run():
        from stratus.compute.agent import AgentGroup
        from stratus.compute.state import get_state
        from stratus.runtime import Runtime

        await upgrade_databases(cfg, [NAME])
        runtime = Runtime(cfg, [NAME])
        await runtime.bus.start()
        state = get_state(runtime)
        agents = await AgentGroup.from_settings(state)
        await agents.start()
        print(f"compute agent(s) running: {', '.join(agents.hosts[:5])}{' ...' if len(agents.hosts) > 5 else ''} "
              f"({len(agents.hosts)} host(s), driver {state.settings.driver})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await agents.stop()
        await runtime.stop()

    asyncio.run(run())
    return 0


SPEC = ServiceSpec(
    name=NAME,
    mounts=["/compute"],
    create_app=create_app,
    catalog=[CatalogEntry("compute", "nova", "/compute/v2.1")],
    health_path="/compute/v2.1",
    bootstrap=bootstrap,
    start=start,
    add_commands=add_commands,
)
