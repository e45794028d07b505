#!/usr/bin/env bash
# Starts libvirtd and virtlogd for Stratus's libvirt driver when they are not running.
# Safe to run again: it only does what is missing. Needs root.
#
# Debian's libvirt-daemon-system package (systemd units, polkit, default configs) is not
# required: this script prepares the few things libvirtd needs on a bare host.
#  - runtime and log directories;
#  - the libvirt-qemu user and group (compiled into Debian's libvirt as the default QEMU user);
#  - /etc/libvirt/qemu.conf: security_driver = "none" (no AppArmor/SELinux confinement, which
#    fails on these hosts) and QEMU running as root, because Stratus keeps instance disks under
#    its state directory, which may sit below directories libvirt-qemu cannot enter. Keys
#    already set in the file are left alone;
#  - virtlogd (writes the serial console logs; domains with a file console fail without it);
#  - libvirtd, then waits for its socket.
set -euo pipefail

SOCKET=/var/run/libvirt/libvirt-sock
QEMU_CONF=/etc/libvirt/qemu.conf
WAIT_SECONDS=${STRATUS_LIBVIRTD_WAIT:-20}

if [ "$(id -u)" -ne 0 ]; then
  echo "start-libvirtd.sh: must run as root (libvirtd manages QEMU processes and taps)" >&2
  exit 1
fi
for tool in libvirtd virtlogd; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
    echo "start-libvirtd.sh: $tool not found (Debian packages libvirt-daemon libvirt-daemon-driver-qemu)" >&2
    exit 1
  fi
done
export PATH="$PATH:/usr/sbin:/sbin"

mkdir -p /var/run/libvirt /var/log/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /etc/libvirt

getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu

touch "$QEMU_CONF"
set_if_absent() {  # key value: append `key = value` unless the key is already set (uncommented)
  if ! grep -Eq "^[[:space:]]*$1[[:space:]]*=" "$QEMU_CONF"; then
    echo "$1 = $2" >> "$QEMU_CONF"
    CONF_CHANGED=1
  fi
}
CONF_CHANGED=0
set_if_absent security_driver '"none"'
set_if_absent user '"root"'
set_if_absent group '"root"'

if ! pgrep -x virtlogd >/dev/null; then
  virtlogd -d
fi

if pgrep -x libvirtd >/dev/null; then
  if [ "$CONF_CHANGED" = 1 ]; then
    echo "start-libvirtd.sh: $QEMU_CONF changed while libvirtd runs; restart libvirtd to apply it" >&2
  fi
else
  rm -f "$SOCKET"  # a stale socket from a killed daemon would make the wait below lie
  libvirtd -d
fi

for _ in $(seq 1 $((WAIT_SECONDS * 10))); do
  if [ -S "$SOCKET" ] && virsh -c qemu:///system version >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.1
done
echo "start-libvirtd.sh: libvirtd did not answer on $SOCKET within ${WAIT_SECONDS}s (see /var/log/libvirt)" >&2
exit 1
