"""Build the Stratus test guest image from Debian packages.

Result (in out_dir):
  stratus-test.raw           BIOS-bootable disk: MBR + FAT16 partition with SYSLINUX
  stratus-test.qcow2         the same disk as qcow2
  stratus-test.vmlinuz       the Debian cloud kernel (for direct -kernel boots)
  stratus-test.initramfs.gz  busybox userland, kernel modules, dropbear, /init
  stratus-test.json          manifest; also the cache stamp

The build is cached: if the manifest's recipe digest (a hash of this package's
source and guest files) matches and all outputs exist, build() returns at once.
Package versions are whatever apt currently offers; force=True rebuilds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import debs
from .cpio import write_initramfs
from .disk import build_disk, convert_to_qcow2
from .elf import dynamic_needs, module_info

BOOT_MARKER = "STRATUS-TEST-IMAGE BOOT OK"
READY_MARKER = "STRATUS-TEST-IMAGE READY"
KERNEL_CMDLINE = "console=tty0 console=ttyS0,115200 quiet"

OUTPUT_NAMES = {
    "raw": "stratus-test.raw",
    "qcow2": "stratus-test.qcow2",
    "kernel": "stratus-test.vmlinuz",
    "initramfs": "stratus-test.initramfs.gz",
}
MANIFEST_NAME = "stratus-test.json"

# Unpacked into the guest tree. libc6 etc. are taken from packages too, so the
# guest's dropbear does not depend on whatever libraries the build host has.
GUEST_PACKAGES = ["busybox-static", "dropbear-bin", "libtomcrypt1", "libtommath1",
                  "libgmp10", "zlib1g", "libcrypt1", "libc6"]
# Only run on the build host, from their unpacked tree.
TOOL_PACKAGES = ["syslinux", "syslinux-common", "mtools", "dosfstools"]

# Kernel modules the guest loads at boot (dependencies are added automatically).
# ATA first: its port probing runs asynchronously while the rest load.
GUEST_MODULES = [
    "ata_piix", "ata_generic", "sr_mod", "sd_mod", "isofs",          # IDE CD-ROM/disk config drive
    "virtio_pci", "virtio_blk", "virtio_scsi",                       # virtio disks / SCSI CD-ROM
    "vfat", "nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859_1",  # vfat config drive, Joliet
    "virtio_net",                                                    # network
    "virtio_rng",                                                    # entropy when offered
    "button", "evdev",                                               # ACPI power button -> acpid
]

DROPBEAR_PROGRAMS = {"usr/sbin/dropbear": "usr/sbin/dropbear", "usr/bin/dropbearkey": "usr/bin/dropbearkey"}
_LIBRARY_DIRS = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib"]
_GUEST_DIR = Path(__file__).with_name("guest")


class BuildError(RuntimeError):
    pass


def recipe_digest() -> str:
    """Hash of everything that defines the image apart from apt's package versions."""
    digest = hashlib.sha256()
    package_dir = Path(__file__).parent
    for path in sorted(package_dir.rglob("*")):
        if path.is_file() and path.suffix not in {".pyc"} and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _outputs(out_dir: Path) -> dict[str, Path]:
    return {key: out_dir / name for key, name in OUTPUT_NAMES.items()}


def cached(out_dir: Path) -> dict | None:
    """The manifest of an up-to-date build in out_dir, or None."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("recipe") != recipe_digest():
        return None
    if not all(path.is_file() for path in _outputs(out_dir).values()):
        return None
    return manifest


def build(out_dir: Path, force: bool = False) -> dict[str, Path]:
    """Build (or reuse) the test image in out_dir; return the paths of the outputs."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Serialise concurrent builders (parallel test sessions sharing a cache dir).
    with open(out_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and cached(out_dir):
            return _outputs(out_dir)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp:
            manifest = _build_into(Path(tmp), out_dir)
        (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return _outputs(out_dir)


def _build_into(work: Path, out_dir: Path) -> dict:
    started = time.monotonic()
    kernel_package = debs.cloud_kernel_package()
    downloaded = debs.download([kernel_package, *GUEST_PACKAGES, *TOOL_PACKAGES], work / "debs")
    guest_root, tools_root = work / "packages", work / "tools"
    for name, deb in downloaded.items():
        debs.extract(deb, tools_root if name in TOOL_PACKAGES else guest_root)

    kernels = sorted((guest_root / "boot").glob("vmlinuz-*"))
    module_trees = sorted((guest_root / "lib/modules").glob("*/kernel"))
    if len(kernels) != 1 or len(module_trees) != 1:
        raise BuildError(f"{kernel_package} did not unpack to one kernel and one module tree")
    kernel_release = module_trees[0].parent.name

    staging = work / "initramfs"
    modules = _stage_modules(module_trees[0].parent, staging)
    _stage_busybox(guest_root, staging)
    _stage_dropbear(guest_root, staging)
    _stage_guest_files(staging, modules)

    outputs = _outputs(out_dir)
    initramfs = work / OUTPUT_NAMES["initramfs"]
    write_initramfs(staging, initramfs)
    kernel = work / OUTPUT_NAMES["kernel"]
    shutil.copyfile(kernels[0], kernel)
    raw = work / OUTPUT_NAMES["raw"]
    build_disk(tools_root=tools_root, kernel=kernel, initramfs=initramfs, cmdline=KERNEL_CMDLINE,
               work_dir=work, out_path=raw)
    qcow2 = work / OUTPUT_NAMES["qcow2"]
    convert_to_qcow2(raw, qcow2)

    for key, produced in (("kernel", kernel), ("initramfs", initramfs), ("raw", raw), ("qcow2", qcow2)):
        os.replace(produced, outputs[key])
    return {
        "recipe": recipe_digest(),
        "kernel_release": kernel_release,
        "kernel_cmdline": KERNEL_CMDLINE,
        "packages": {name: debs.package_version(deb) for name, deb in sorted(downloaded.items())},
        "modules": modules,
        "sizes": {key: path.stat().st_size for key, path in outputs.items()},
        "build_seconds": round(time.monotonic() - started, 1),
    }


# ---------------------------------------------------------------- kernel modules

def resolve_module_order(modules_root: Path, wanted: list[str]) -> list[str]:
    """Paths (relative to modules_root) of wanted modules and their dependencies, dependencies first."""
    index = {ko.name[:-3].replace("-", "_"): ko for ko in (modules_root / "kernel").rglob("*.ko")}
    builtin = set()
    builtin_list = modules_root / "modules.builtin"
    if builtin_list.exists():
        for line in builtin_list.read_text().split():
            builtin.add(Path(line).name.removesuffix(".ko").replace("-", "_"))

    order: list[str] = []
    placed: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in placed or name in builtin:
            return
        if name in chain:
            raise BuildError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        if name not in index:
            raise BuildError(f"kernel module {name} is neither a module nor built in")
        info = module_info(index[name])
        for dep in ",".join(info.get("depends", [])).split(","):
            if dep:
                visit(dep, chain + (name,))
        # "softdep pre:" modules are loaded first by modprobe; do the same when they exist.
        for softdep in info.get("softdep", []):
            pre = softdep.split("post:")[0].removeprefix("pre:").split()
            for dep in pre:
                if dep.replace("-", "_") in index:
                    visit(dep, chain + (name,))
        placed.add(name)
        order.append(index[name].relative_to(modules_root).as_posix())

    for name in wanted:
        visit(name, ())
    return order


def _stage_modules(modules_root: Path, staging: Path) -> list[str]:
    order = resolve_module_order(modules_root, GUEST_MODULES)
    for rel in order:
        target = staging / "lib/modules" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(modules_root / rel, target)
    (staging / "etc").mkdir(parents=True, exist_ok=True)
    (staging / "etc/modules.load").write_text("".join(f"{rel}\n" for rel in order))
    return order


# ---------------------------------------------------------------- userland

def _stage_busybox(guest_root: Path, staging: Path) -> None:
    busybox = guest_root / "bin/busybox"
    target = staging / "bin/busybox"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, target)
    target.chmod(0o755)
    # busybox-static is a static x86-64 binary, so it can list its own applets here.
    proc = subprocess.run([str(target), "--list-full"], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise BuildError(f"busybox --list-full failed: {proc.stderr.strip()}")
    for applet in proc.stdout.split():
        link = staging / applet
        if applet in {"bin/busybox", "linuxrc"} or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")


def _resolve_in_root(root: Path, rel: str) -> Path:
    """Follow symlinks of rel inside an unpacked tree (absolute link targets stay in the tree)."""
    current = rel.lstrip("/")
    for _ in range(40):
        path = root / current
        if not path.is_symlink():
            return path
        target = os.readlink(path)
        current = target.lstrip("/") if target.startswith("/") else \
            os.path.normpath(os.path.join(os.path.dirname(current), target))
    raise BuildError(f"symlink loop at {rel}")


def _find_library(root: Path, soname: str) -> Path | None:
    for directory in _LIBRARY_DIRS:
        path = _resolve_in_root(root, f"{directory}/{soname}")
        if path.is_file():
            return path
    return None


def _stage_dropbear(guest_root: Path, staging: Path) -> None:
    """Copy dropbear and every shared library it needs (transitively) from the unpacked packages."""
    pending: list[Path] = []
    for source, dest in DROPBEAR_PROGRAMS.items():
        target = staging / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(guest_root / source, target)
        target.chmod(0o755)
        pending.append(target)
    seen: set[str] = set()
    while pending:
        interpreter, needed = dynamic_needs(pending.pop())
        if interpreter and interpreter not in seen:
            seen.add(interpreter)
            source = _resolve_in_root(guest_root, interpreter)
            if not source.is_file():
                raise BuildError(f"dropbear's program interpreter {interpreter} is not in the unpacked packages")
            target = staging / interpreter.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            target.chmod(0o755)
        for soname in needed:
            if soname in seen:
                continue
            seen.add(soname)
            source = _find_library(guest_root, soname)
            if source is None:
                raise BuildError(f"shared library {soname} needed by dropbear is in none of {GUEST_PACKAGES}")
            target = staging / "lib/x86_64-linux-gnu" / soname
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            target.chmod(0o755)
            pending.append(target)


def _stage_guest_files(staging: Path, modules: list[str]) -> None:
    etc = staging / "etc"
    for directory in ("proc", "sys", "dev", "run", "tmp", "mnt/config", "root", "etc/acpi/PWRF", "var/log"):
        (staging / directory).mkdir(parents=True, exist_ok=True)
    (staging / "var/run").symlink_to("/run")
    init = staging / "init"
    shutil.copyfile(_GUEST_DIR / "init.sh", init)
    init.chmod(0o755)
    helpers = staging / "lib/stratus/metadata.sh"
    helpers.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_GUEST_DIR / "metadata.sh", helpers)
    script = etc / "udhcpc.script"
    shutil.copyfile(_GUEST_DIR / "udhcpc.script", script)
    script.chmod(0o755)
    # busybox acpid maps the power button event PWRF to the action PWRF/00000080.
    power = etc / "acpi/PWRF/00000080"
    shutil.copyfile(_GUEST_DIR / "acpi-power-button.sh", power)
    power.chmod(0o755)
    # '*' (not '!') as the password: no password login, but dropbear does not treat root as locked.
    (etc / "passwd").write_text("root:*:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shells").write_text("/bin/sh\n/bin/ash\n")
    (etc / "hostname").write_text("stratus-test\n")
    (etc / "profile").write_text('export PATH=/bin:/sbin:/usr/bin:/usr/sbin\nPS1="$(hostname):\\w# "\n')
    (staging / "tmp").chmod(0o1777)
    (staging / "root").chmod(0o700)
