"""The ``stratus`` operator command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path

from stratus import config as config_mod
from stratus import services
from stratus.common import log as logmod

log = logging.getLogger("stratus.cli")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="path of stratus.toml (default: $STRATUS_CONFIG)")
    p.add_argument("--state-dir", help=f"where state lives (default {config_mod.DEFAULT_STATE_DIR})")
    p.add_argument("--debug", action="store_true", help="log SQL and bus traffic too")


def _apply_args_to_env(args) -> None:
    """CLI flags become STRATUS_* variables so that worker processes see the same settings."""
    if getattr(args, "config", None):
        os.environ["STRATUS_CONFIG"] = str(Path(args.config).resolve())
    if getattr(args, "state_dir", None):
        os.environ["STRATUS_STATE_DIR"] = str(Path(args.state_dir).resolve())
    if getattr(args, "debug", False):
        os.environ["STRATUS_DEBUG"] = "true"
    if getattr(args, "host", None):
        os.environ["STRATUS_SERVER__HOST"] = args.host
    if getattr(args, "port", None):
        os.environ["STRATUS_SERVER__PORT"] = str(args.port)


def load_config() -> config_mod.Config:
    try:
        cfg = config_mod.load()
    except config_mod.ConfigError as exc:
        print(f"stratus: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    present = services.available()
    missing = [s for s in cfg.enabled_services if s not in present]
    if missing:
        log.warning("enabled services not present in this build, skipped: %s", ", ".join(missing))
        cfg.tree["services"]["enabled"] = [s for s in cfg.enabled_services if s in present]
    return cfg


async def upgrade_databases(cfg: config_mod.Config, names: list[str]) -> None:
    from stratus.common import db

    await asyncio.gather(*(db.upgrade(name, cfg.database_url(name)) for name in names
                           if services.get(name).has_db))


def cmd_db(args) -> int:
    _apply_args_to_env(args)
    cfg = load_config()
    logmod.setup(cfg["debug"])
    if args.db_command == "upgrade":
        names = [args.service] if args.service else cfg.enabled_services
        asyncio.run(upgrade_databases(cfg, names))
        print(f"schemas up to date: {', '.join(names)}")
    elif args.db_command == "revision":
        from stratus.common import db

        db.autogenerate(args.service, args.message)
    return 0


def _write_runfile(cfg: config_mod.Config, runtime) -> None:
    info = {
        "url": cfg.public_url,
        "pid": os.getpid(),
        "services": {s.name: cfg.public_url + s.health_path for s in runtime.specs if s.health_path},
    }
    (cfg.state_dir / "stratus.json").write_text(json.dumps(info, indent=2))


async def _serve(cfg: config_mod.Config, runtime, *, bootstrap: bool) -> None:
    import uvicorn

    from stratus.app import RootApp

    names = [s.name for s in runtime.specs]
    started = time.monotonic()
    await upgrade_databases(cfg, names)
    log.info("schemas ready in %.2f s", time.monotonic() - started)
    if bootstrap:
        for spec in runtime.specs:
            if spec.bootstrap is not None:
                t = time.monotonic()
                await spec.bootstrap(runtime)
                log.info("bootstrap of %s took %.2f s", spec.name, time.monotonic() - t)
    app = RootApp(runtime)
    server = uvicorn.Server(uvicorn.Config(
        app, host=cfg["server"]["host"], port=cfg["server"]["port"], loop="uvloop", http="httptools",
        lifespan="on", log_level="warning", access_log=False, timeout_keep_alive=75))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            raise SystemExit(1)
        await asyncio.sleep(0.02)
    _write_runfile(cfg, runtime)
    log.info("Stratus is up at %s (%s) in %.1f s; state in %s", cfg.public_url, ", ".join(names),
             time.monotonic() - started, cfg.state_dir)
    for spec in runtime.specs:
        if spec.post_start is not None:
            try:
                await spec.post_start(runtime)
            except Exception:
                log.exception("post-start work of %s failed", spec.name)
    if bootstrap:
        print(f"Stratus is ready: {cfg.public_url}\n  clouds.yaml: {cfg.state_dir / 'clouds.yaml'}\n"
              f"  try: OS_CLOUD=admin OS_CLIENT_CONFIG_FILE={cfg.state_dir / 'clouds.yaml'} openstack catalog list",
              flush=True)
    await serving


def cmd_up(args) -> int:
    _apply_args_to_env(args)
    cfg = load_config()
    logmod.setup(cfg["debug"])
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    from stratus.runtime import Runtime

    runtime = Runtime(cfg)
    try:
        asyncio.run(_serve(cfg, runtime, bootstrap=True))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_serve(args) -> int:
    _apply_args_to_env(args)
    names = args.service
    for n in names:
        if n not in services.KNOWN_SERVICES:
            print(f"stratus: unknown service {n!r}; known: {', '.join(services.KNOWN_SERVICES)}",
                  file=sys.stderr)
            return 2
    os.environ["STRATUS_SERVE_SERVICES"] = ",".join(names)
    cfg = load_config()
    logmod.setup(cfg["debug"])
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    workers = args.workers or cfg["server"]["workers"]
    asyncio.run(upgrade_databases(cfg, names))
    if args.bootstrap:
        from stratus.runtime import Runtime

        async def boot():
            rt = Runtime(cfg, names)
            for spec in rt.specs:
                if spec.bootstrap is not None:
                    await spec.bootstrap(rt)
            await rt.stop()

        asyncio.run(boot())
    if workers > 1:
        import uvicorn

        uvicorn.run("stratus.app:create_app_from_env", factory=True, host=cfg["server"]["host"],
                    port=cfg["server"]["port"], workers=workers, loop="uvloop", http="httptools",
                    log_level="warning", access_log=False, timeout_keep_alive=75)
        return 0
    from stratus.runtime import Runtime

    runtime = Runtime(cfg, names)
    try:
        asyncio.run(_serve(cfg, runtime, bootstrap=False))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_status(args) -> int:
    import httpx

    _apply_args_to_env(args)
    cfg = load_config()
    runfile = cfg.state_dir / "stratus.json"
    if not runfile.exists():
        print(f"stratus is not running (no {runfile})")
        return 1
    info = json.loads(runfile.read_text())
    ok = True
    with httpx.Client(timeout=5) as client:
        for name, url in info["services"].items():
            try:
                code = client.get(url).status_code
                up = code < 400
            except httpx.HTTPError as exc:
                code, up = type(exc).__name__, False
            ok &= up
            print(f"{name:12} {'up' if up else 'DOWN':5} {code} {url}")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratus", description="Run and operate a Stratus cloud.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="run every enabled service on this host (all-in-one)")
    _common(p)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"port to listen on (default {config_mod.DEFAULT_PORT})")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("serve", help="run one or more services' APIs in this process")
    _common(p)
    p.add_argument("service", nargs="+", help="service name(s), e.g. identity")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, help="worker processes (default server.workers)")
    p.add_argument("--bootstrap", action="store_true", help="write first-start data before serving")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("status", help="exit 0 only when every enabled service answers")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("db", help="database schemas")
    _common(p)
    dbsub = p.add_subparsers(dest="db_command", required=True)
    q = dbsub.add_parser("upgrade", help="migrate every enabled service's schema to the newest")
    q.add_argument("--service")
    q = dbsub.add_parser("revision", help="(developers) autogenerate a migration for a service")
    q.add_argument("service")
    q.add_argument("-m", "--message", required=True)
    p.set_defaults(func=cmd_db)

    for name in services.available():
        spec = services.get(name)
        if spec.add_commands is not None:
            spec.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
