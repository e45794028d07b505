#!/bin/sh
# PID 1 of the Stratus test guest. It plays the part cloud-init plays in a real
# image, just much faster: read instance metadata from a config drive (label
# config-2) or the metadata service, configure the NICs (static addresses from
# network_data.json, else DHCP), run a #! user-data script, start an SSH server
# for the injected key, then hold a console shell.
# The marker lines it prints are what the end-to-end tests wait for, so keep
# their wording stable.  PID 1 must never exit: nothing below uses `set -e`.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /mnt/config
mount -t devpts devpts /dev/pts
exec </dev/console >/dev/console 2>&1
hostname -F /etc/hostname

# Marker lines go to the console (serial, via console=ttyS0) and to the screen.
say() {
    echo "$*"
    echo "$*" > /dev/tty1 2>/dev/null
}

say "STRATUS-TEST-IMAGE BOOT OK"
say "kernel: $(uname -r)"

# Modules in dependency order, resolved when the image was built.
while read -r module; do
    insmod "/lib/modules/$module" 2>/dev/null || say "module: failed to load $module"
done < /etc/modules.load

# json_flatten, json_get, json_public_keys: JSON reading with busybox awk.
. /lib/stratus/metadata.sh

# busybox findfs reads ISO 9660 and FAT labels (this busybox has no blkid applet).
find_config_drive() {
    findfs LABEL=config-2 2>/dev/null || findfs LABEL=CONFIG-2 2>/dev/null
}

# Apply a static IPv4 network from network_data.json to NIC $1 (matched by MAC).
# Returns 1 when the NIC has no "ipv4" (static) network there: then DHCP is used,
# as cloud-init does for "ipv4_dhcp" networks and unknown NICs.
static_ipv4() {
    [ -s /run/network_data.json ] || return 1
    flat=$(json_flatten /run/network_data.json) || return 1
    mac=$(cat "/sys/class/net/$1/address")
    link=$(printf '%s\n' "$flat" | awk -F '\t' -v mac="$mac" '
        $1 ~ /^links\/[0-9]+\/ethernet_mac_address$/ && tolower($2) == tolower(mac) { split($1, p, "/"); print p[2]; exit }')
    [ -n "$link" ] || return 1
    link_id=$(printf '%s\n' "$flat" | flat_get "links/$link/id")
    net=$(printf '%s\n' "$flat" | awk -F '\t' -v id="$link_id" '
        $1 ~ /^networks\/[0-9]+\/link$/ && $2 == id { split($1, p, "/"); on_link[p[2]] = 1 }
        $1 ~ /^networks\/[0-9]+\/type$/ && $2 == "ipv4" { split($1, p, "/"); static[p[2]] = 1 }
        END { for (n = 0; n < 100; n++) if ((n in on_link) && (n in static)) { print n; exit } }')
    [ -n "$net" ] || return 1
    address=$(printf '%s\n' "$flat" | flat_get "networks/$net/ip_address")
    netmask=$(printf '%s\n' "$flat" | flat_get "networks/$net/netmask")
    [ -n "$address" ] || return 1
    ifconfig "$1" "$address" netmask "${netmask:-255.255.255.0}" up || return 1
    r=0
    while :; do
        gateway=$(printf '%s\n' "$flat" | flat_get "networks/$net/routes/$r/gateway")
        [ -n "$gateway" ] || break
        destination=$(printf '%s\n' "$flat" | flat_get "networks/$net/routes/$r/network")
        mask=$(printf '%s\n' "$flat" | flat_get "networks/$net/routes/$r/netmask")
        if [ "$destination" = 0.0.0.0 ]; then
            route add default gw "$gateway" dev "$1"
        else
            route add -net "$destination" netmask "$mask" gw "$gateway" dev "$1"
        fi
        r=$((r + 1))
    done
    printf '%s\n' "$flat" | awk -F '\t' '
        $1 ~ /^(services|networks\/[0-9]+\/services)\/[0-9]+\/type$/ && $2 == "dns" { dns[substr($1, 1, length($1) - 4)] = 1 }
        $1 ~ /\/address$/ { addr[substr($1, 1, length($1) - 7)] = $2 }
        END { for (k in dns) if (k in addr) print "nameserver " addr[k] }' >> /etc/resolv.conf
    say "network: $1 static from network_data.json"
    return 0
}

NETWORK_DONE=
configure_network() {
    [ -n "$NETWORK_DONE" ] && return 0
    NETWORK_DONE=1
    ip link set lo up
    for path in /sys/class/net/eth*; do
        [ -e "$path" ] || continue
        nic=${path##*/}
        ip link set "$nic" up
        static_ipv4 "$nic" && continue
        # Without -f udhcpc goes to the background once bound and keeps renewing;
        # -n makes it give up (status 1) when no server answers.
        # Ask for the MTU and classless static routes too: dnsmasq only sends
        # options a client requests, and the metadata route may be option 121.
        udhcpc -i "$nic" -s /etc/udhcpc.script -t 4 -T 1 -A 2 -n -p "/run/udhcpc.$nic.pid" \
            -O mtu -O staticroutes \
            > "/run/udhcpc.$nic.log" 2>&1 &
    done
    wait
    for path in /sys/class/net/eth*; do
        [ -e "$path" ] || continue
        nic=${path##*/}
        addr=$(ip -4 -o addr show dev "$nic" | awk '{print $4}' | cut -d/ -f1 | head -n 1)
        say "$nic: ${addr:-none}"
    done
}

say "disks: $(ls /sys/block | grep -v -E '^(loop|ram)' | tr '\n' ' ')"

# ---- 1. config drive. insmod waits for the asynchronous ATA/SCSI probing its
# module started, so the drive is normally visible at once; poll ~1 s anyway.
META=/run/meta_data.json
USER_DATA=/run/user_data
drive=
tries=0
while [ $tries -lt 5 ]; do
    drive=$(find_config_drive) && break
    drive=
    usleep 200000
    tries=$((tries + 1))
done
if [ -n "$drive" ] && mount -o ro "$drive" /mnt/config; then
    say "config-drive: $drive"
    cp /mnt/config/openstack/latest/meta_data.json "$META" 2>/dev/null
    cp /mnt/config/openstack/latest/user_data "$USER_DATA" 2>/dev/null
    cp /mnt/config/openstack/latest/network_data.json /run/network_data.json 2>/dev/null
    umount /mnt/config
else
    say "config-drive: none"
fi

# ---- 2. network, then the metadata service if there was no config drive
configure_network
if [ ! -s "$META" ]; then
    say "metadata-service: trying http://169.254.169.254"
    base=http://169.254.169.254/openstack/latest
    # Bounded by the timeout applet: this busybox build's "wget -T" crashes.
    if timeout 5 wget -q -O "$META" "$base/meta_data.json" 2>/dev/null && [ -s "$META" ]; then
        say "metadata-service: ok"
        timeout 5 wget -q -O "$USER_DATA" "$base/user_data" 2>/dev/null || rm -f "$USER_DATA"
    else
        rm -f "$META"
        say "metadata-service: unreachable"
    fi
fi

# ---- 3. identity
if [ -s "$META" ]; then
    uuid=$(json_get uuid "$META")
    name=$(json_get hostname "$META")
    [ -n "$name" ] || name=$(json_get name "$META")
    say "instance-id: ${uuid:-unknown}"
    say "hostname: ${name:-unknown}"
    [ -n "$name" ] && hostname "${name%%.*}"
else
    say "metadata: none found"
fi

# ---- 4. user data: only scripts (#!) are run, in the foreground (READY waits for them)
if [ -s "$USER_DATA" ] && [ "$(head -c 2 "$USER_DATA")" = '#!' ]; then
    say "USER-DATA BEGIN"
    sh "$USER_DATA" < /dev/null
    rc=$?
    say "USER-DATA END rc=$rc"
elif [ -s "$USER_DATA" ]; then
    say "user-data: not a #! script, ignored"
fi

# ---- 5. SSH server for the injected public key(s)
if [ -s "$META" ]; then
    json_public_keys "$META" > /run/authorized_keys
fi
if [ -s /run/authorized_keys ]; then
    mkdir -p /root/.ssh /etc/dropbear
    chmod 700 /root /root/.ssh
    cp /run/authorized_keys /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
    hostkey=/etc/dropbear/dropbear_ed25519_host_key
    if dropbearkey -t ed25519 -f "$hostkey" > /dev/null 2>&1 && dropbear -r "$hostkey" -s -p 22; then
        say "ssh: dropbear listening on port 22"
        say "ssh-host-key: $(dropbearkey -y -f "$hostkey" 2>/dev/null | grep '^ssh-')"
    else
        say "ssh: dropbear failed to start"
    fi
else
    say "ssh: no public key in metadata, not started"
fi

# ---- 6. ACPI power button -> clean power off (lets "server stop" finish quickly)
acpid -c /etc/acpi 2>/dev/null

say "boot-time: $(cut -d' ' -f1 /proc/uptime)s"
say "STRATUS-TEST-IMAGE READY"

# ---- 7. console shells forever (serial console and first virtual terminal)
( while :; do setsid sh -c 'exec sh -l </dev/tty1 >/dev/tty1 2>&1'; sleep 1; done ) &
while :; do
    setsid cttyhack sh -l
    sleep 1
done
