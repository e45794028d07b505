"""Command line: python -m stratus.testimage build --out DIR [--force]"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .builder import MANIFEST_NAME, BuildError, build
from .debs import PackageError
from .disk import DiskError
from .elf import ElfError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stratus.testimage",
                                     description="Build the Stratus test guest image from Debian packages.")
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build (or reuse a cached) image")
    build_cmd.add_argument("--out", required=True, type=Path, help="output directory")
    build_cmd.add_argument("--force", action="store_true", help="rebuild even if a cached image is current")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        paths = build(args.out, force=args.force)
    except (BuildError, PackageError, DiskError, ElfError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest = json.loads((args.out / MANIFEST_NAME).read_text())
    report = {key: str(path) for key, path in paths.items()}
    report["sizes"] = manifest.get("sizes")
    report["packages"] = manifest.get("packages")
    report["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
