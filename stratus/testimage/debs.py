"""Fetch Debian packages with apt-get download and unpack them with dpkg -x.

Nothing is installed on the host: packages land in a caller-given directory
and are unpacked into a private tree.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

CLOUD_KERNEL_META = "linux-image-cloud-amd64"


class PackageError(RuntimeError):
    pass


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise PackageError(f"{argv[0]} not found: the image build needs apt and dpkg (Debian)") from exc
    if proc.returncode != 0:
        raise PackageError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def cloud_kernel_package() -> str:
    """Name of the versioned cloud kernel package the meta-package currently points at."""
    out = _run(["apt-cache", "depends", CLOUD_KERNEL_META])
    found = re.findall(r"Depends:\s*(linux-image-\S+-cloud-amd64)\b", out)
    if not found:
        raise PackageError(
            f"apt-cache knows no {CLOUD_KERNEL_META} dependency; run apt-get update (Debian main needed)")
    return found[0]


def download(packages: list[str], dest: Path) -> dict[str, Path]:
    """Download packages (no dependencies) into dest; return name -> .deb path."""
    dest.mkdir(parents=True, exist_ok=True)
    # --print-uris names the exact file each package will be saved as.
    listing = _run(["apt-get", "download", "--print-uris", *packages], cwd=dest)
    filenames: dict[str, str] = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].endswith(".deb"):
            filenames[parts[1].split("_", 1)[0]] = parts[1]
    missing = [name for name in packages if name not in filenames]
    if missing:
        raise PackageError(f"apt cannot find package(s): {', '.join(missing)}")
    _run(["apt-get", "download", *packages], cwd=dest)
    result = {}
    for name, filename in filenames.items():
        # apt-get stores an epoch colon as %3a while --print-uris shows it plainly.
        path = dest / filename
        if not path.exists():
            path = dest / filename.replace(":", "%3a")
        if not path.exists():
            raise PackageError(f"apt-get download did not produce {filename}")
        result[name] = path
    return result


def package_version(deb: Path) -> str:
    return _run(["dpkg-deb", "--field", str(deb), "Version"]).strip()


def extract(deb: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    _run(["dpkg", "-x", str(deb), str(root)])
