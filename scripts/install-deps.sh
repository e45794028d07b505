#!/usr/bin/env bash
# Installs what Stratus needs on a Debian 12 machine: Debian packages, uv, the Python
# environment. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  # virtual machines
  qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config novnc e2fsprogs
  # networking data path
  iproute2 dnsmasq-base nftables iptables iputils-ping bridge-utils
  # test guest image and config drives
  busybox-static cpio genisoimage dosfstools mtools kmod openssh-client dash util-linux
  # benchmarks and browser checks
  wrk chromium chromium-driver
)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install -q uv
fi

# The cloud and its clients (openstack, swift) for `make up`; the test tools on top for `make test`.
# --inexact: `make up` after `make test` must not uninstall the test tools from the shared .venv.
groups=(--all-extras --group clients --inexact)
if [ "${1:-}" = "--test" ]; then groups+=(--group test); fi
uv sync --frozen "${groups[@]}" -q
