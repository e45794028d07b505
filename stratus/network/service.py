"""Networking's place in a Stratus process."""

from __future__ import annotations

import asyncio
import logging

from stratus.services import CatalogEntry, ServiceSpec

NAME = "network"
log = logging.getLogger("stratus.network")


def _settings(runtime) -> dict:
    cached = getattr(runtime, "_network_settings", None)
    if cached is None:
        from stratus.network import settings

        cached = settings.load(runtime.config)
        cached["metadata_url_resolved"] = cached["metadata_url"] or f"{runtime.public_url}/compute/metadata"
        runtime._network_settings = cached
    return cached


def _manager(runtime):
    mgr = getattr(runtime, "_network_manager", None)
    if mgr is None:
        from stratus.network.manager import NetworkManager

        mgr = NetworkManager(runtime.db(NAME), runtime.bus, _settings(runtime))
        runtime._network_manager = mgr
    return mgr


def create_app(runtime):
    from stratus.network.api import create_app as make

    return make(_manager(runtime), runtime.validator(NAME))


async def bootstrap(runtime) -> None:
    """First start: the external network `public` (flat, on the host bridge br-ex) and its subnet."""
    from stratus.network.bootstrap import ensure_external_network

    await ensure_external_network(_manager(runtime), _settings(runtime))


async def start(runtime):
    from stratus.network.state import PluginEndpoint

    settings = _settings(runtime)
    mgr = _manager(runtime)
    subs = [await runtime.bus.serve("network.plugin", PluginEndpoint(mgr))]
    agent = None
    if settings["run_agent"]:
        agent = await start_agent(runtime.bus, runtime.config, settings)

    async def stop():
        if agent is not None:
            await agent.stop(teardown=settings["teardown_on_stop"])
        for sub in subs:
            await sub.stop()

    return stop


async def start_agent(bus, config, settings):
    from stratus.network import drivers
    from stratus.network.agent import NetworkAgent
    from stratus.network.settings import metadata_secret

    settings = dict(settings)
    settings["metadata_secret"] = metadata_secret(config)
    settings.setdefault("metadata_url_resolved", settings["metadata_url"] or f"{config.public_url}/compute/metadata")
    driver = drivers.load(settings["agent_driver"], settings)
    agent = NetworkAgent(bus, settings, driver)
    await agent.start()
    return agent


def add_commands(sub) -> None:
    from stratus.cli import _common

    p = sub.add_parser("network-agent", help="run this host's network agent (bridges, DHCP, routers, "
                                             "security groups) against a network service on the bus")
    _common(p)
    p.add_argument("--cleanup", action="store_true", help="remove everything the agent created and exit")
    p.set_defaults(func=_agent_command)


def _agent_command(args) -> int:
    from stratus.cli import _apply_args_to_env, load_config
    from stratus.common import log as logmod
    from stratus.common.bus import create_bus
    from stratus.network import settings as net_settings

    _apply_args_to_env(args)
    cfg = load_config()
    logmod.setup(cfg["debug"])
    settings = net_settings.load(cfg)

    async def run():
        if args.cleanup:
            from stratus.network import drivers

            await drivers.load(settings["agent_driver"], settings).teardown()
            return
        bus_cfg = cfg["bus"]
        bus = create_bus(bus_cfg["transport"], bus_cfg["url"], default_timeout=bus_cfg["rpc_timeout"],
                         debug=cfg["debug"], namespace=bus_cfg["namespace"])
        await bus.start()
        agent = await start_agent(bus, cfg, settings)
        stopping = asyncio.Event()
        import signal

        # SIGTERM (systemd, tests) stops as cleanly as Ctrl-C: the data path is torn down or kept
        # according to teardown_on_stop.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        try:
            await stopping.wait()
        finally:
            await agent.stop(teardown=settings["teardown_on_stop"])
            await bus.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


SPEC = ServiceSpec(
    name=NAME,
    mounts=["/network"],
    create_app=create_app,
    catalog=[CatalogEntry("network", "neutron", "/network")],
    health_path="/network/",
    bootstrap=bootstrap,
    start=start,
    add_commands=add_commands,
)
