"""The Linux bridge data path: bridges with VXLAN/VLAN uplinks, dnsmasq and routers in namespaces,
security groups and NAT in nftables.

Names (so that the agent, tests and operators recognize what is ours):
  brq<net[:11]>     a network's bridge            vxlan-<vni>, <phys>.<vlan>  its uplink
  tap<port[:11]>    the host end of a port         ns-/qr-/qg-<port[:11]>      the namespace end
  qdhcp-<net id>    DHCP + metadata namespace      qrouter-<router id>         a router
Everything created is also recorded in <state>/network/linuxbridge-<host>.json, and only recorded
objects are ever removed, so two agents or other software on the host are never disturbed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import shutil
import signal
from pathlib import Path

from stratus.network.drivers import nftrules
from stratus.network.drivers.base import DataPathDriver
from stratus.network.metadata import METADATA_IP, MetadataProxy

log = logging.getLogger("stratus.network.linuxbridge")


class CommandError(Exception):
    pass


PACKAGES = {"ip": "iproute2", "bridge": "iproute2", "nft": "nftables", "dnsmasq": "dnsmasq-base",
            "modprobe": "kmod"}


async def run(*args: str, input: bytes | None = None, check: bool = True) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE if input is not None
                                                    else None, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        if not check:
            return ""
        raise CommandError(f"the command {args[0]!r} is not installed (Debian package "
                           f"{PACKAGES.get(args[0], args[0])})") from None
    out, err = await proc.communicate(input)
    if check and proc.returncode != 0:
        raise CommandError(f"{' '.join(args)} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


def short(ident: str) -> str:
    return ident[:11]


class LinuxBridgeDriver(DataPathDriver):
    name = "linuxbridge"

    def __init__(self, settings: dict):
        self.settings = settings
        self.table = settings["nft_table"]
        self.host = settings["host"]
        self.state_dir = Path(settings["state_dir"])
        self.record_path = self.state_dir / f"linuxbridge-{self.host}.json"
        self.record = self._load_record()
        self.local_ip = settings.get("local_ip") or None
        self._done: dict[str, object] = {}
        self._taps_seen: dict[str, bool] = {}
        self._lock = asyncio.Lock()
        self._dhcp_hosts: dict[str, dict[str, dict]] = {}
        self.metadata = MetadataProxy(settings.get("metadata_url_resolved") or "http://127.0.0.1/",
                                      settings.get("metadata_secret") or "", self._metadata_lookup)

    # ---- record of what we created -------------------------------------------------------

    def _load_record(self) -> dict:
        try:
            data = json.loads(self.record_path.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        for key in ("bridges", "links", "namespaces"):
            data.setdefault(key, [])
        data.setdefault("dnsmasq", {})
        data.setdefault("tables", False)
        return data

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record, indent=1, sort_keys=True))
        os.replace(tmp, self.record_path)

    def _remember(self, kind: str, name: str) -> None:
        if name not in self.record[kind]:
            self.record[kind].append(name)
            self._save()

    def _forget(self, kind: str, name: str) -> None:
        if name in self.record[kind]:
            self.record[kind].remove(name)
            self._save()

    # ---- inspection ----------------------------------------------------------------------

    @staticmethod
    async def links(netns: str | None = None) -> dict[str, dict]:
        args = ["ip", "-j", "-d"] + (["-n", netns] if netns else []) + ["link", "show"]
        out = await run(*args)
        return {i["ifname"]: i for i in json.loads(out or "[]")}

    @staticmethod
    async def namespaces() -> set[str]:
        out = await run("ip", "-j", "netns", "list")
        return {n["name"] for n in json.loads(out or "[]")} if out.strip() else set()

    @staticmethod
    async def addresses(netns: str, dev: str) -> set[str]:
        out = await run("ip", "-j", "-n", netns, "addr", "show", "dev", dev)
        data = json.loads(out or "[]")
        return {f"{a['local']}/{a['prefixlen']}" for i in data for a in i.get("addr_info", [])
                if a.get("scope") != "link"}

    # ---- networks ------------------------------------------------------------------------

    async def ensure_network(self, network: dict) -> None:
        async with self._lock:
            await self._ensure_network(network, await self.links(), [])

    async def _ensure_bridge(self, name: str, links: dict) -> None:
        if name in links:
            return
        await run("ip", "link", "add", "name", name, "type", "bridge")
        self._remember("bridges", name)
        # A tenant bridge carries guests' traffic only; the host takes no part in it.
        try:
            Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1\n")
        except OSError:
            pass  # no IPv6 on this host: nothing to disable
        ext = self.settings["external_network"]
        if name == self.settings["bridge_mappings"].get(ext["physical_network"]):
            prefix = ipaddress.ip_network(ext["cidr"]).prefixlen
            await run("ip", "addr", "replace", f"{ext['gateway_ip']}/{prefix}", "dev", name)
        await run("ip", "link", "set", name, "up")
        links[name] = {"ifname": name, "linkinfo": {"info_kind": "bridge"}}

    async def _ensure_network(self, net: dict, links: dict, peers: list[str]) -> None:
        bridge = net["bridge"]
        await self._ensure_bridge(bridge, links)
        kind = net["network_type"]
        uplink = None
        if kind == "vxlan":
            uplink = f"vxlan-{net['segmentation_id']}"
            if uplink not in links:
                from stratus.network.settings import default_local_ip

                local = self.local_ip or default_local_ip()
                await run("ip", "link", "add", uplink, "type", "vxlan", "id", str(net["segmentation_id"]),
                          "local", local, "dstport", str(self.settings["vxlan_port"]))
                self._remember("links", uplink)
                links[uplink] = {"ifname": uplink}
            want_peers = sorted(set(peers))
            key = f"fdb:{uplink}"
            if self._done.get(key) != want_peers:
                for peer in want_peers:
                    await run("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", uplink, "dst", peer, check=False)
                self._done[key] = want_peers
        elif kind in ("vlan", "flat") and bridge.startswith("brq"):
            phys = self.settings["physical_interface_mappings"].get(net["physical_network"])
            if not phys:
                log.warning("network %s: physical network %s has no interface mapping on this host",
                            net["id"], net["physical_network"])
            elif kind == "vlan":
                uplink = f"{phys[:9]}.{net['segmentation_id']}"
                if uplink not in links:
                    await run("ip", "link", "add", "link", phys, "name", uplink, "type", "vlan", "id",
                              str(net["segmentation_id"]))
                    self._remember("links", uplink)
                    links[uplink] = {"ifname": uplink}
            else:
                uplink = phys
        if uplink and links.get(uplink, {}).get("master") != bridge:
            await run("ip", "link", "set", uplink, "master", bridge, "up")
            links[uplink]["master"] = bridge

    # ---- apply ---------------------------------------------------------------------------

    async def apply(self, state: dict) -> set[str]:
        async with self._lock:
            return await self._apply(state)

    async def _apply(self, state: dict) -> set[str]:
        links = await self.links()
        namespaces = await self.namespaces()
        # One broken piece (a missing dnsmasq, a bad mapping) must not keep the rest of the host,
        # security groups above all, from converging: collect failures, finish, then report.
        failures: list[str] = []
        if state["ports"] and not self._done.get("br_netfilter"):
            problem = await self._bridge_netfilter()
            if problem:
                failures.append(problem)
            else:
                self._done["br_netfilter"] = True
        for net in state["networks"].values():
            try:
                await self._ensure_network(net, links, state.get("tunnel_peers", []))
            except (CommandError, OSError) as exc:
                failures.append(f"network {net['id']}: {exc}")
        wired = set()
        for p in state["ports"]:
            bridge = state["networks"].get(p["network_id"], {}).get("bridge")
            info = links.get(p["tap"])
            self._taps_seen[p["tap"]] = info is not None
            if info is None or bridge is None:
                continue
            if info.get("master") != bridge:
                await run("ip", "link", "set", p["tap"], "master", bridge)
            if "UP" not in info.get("flags", []):
                await run("ip", "link", "set", p["tap"], "up")
            wired.add(p["id"])
        # Security groups first: a rule change is what users wait for, and it needs only names.
        # Conntrack zones and port chains only for the tenant bridges this agent made.
        bridges = [n["bridge"] for n in state["networks"].values()]
        text = nftrules.render_security(self.table, state["ports"], state["security_groups"], bridges)
        if not bridges and not state["ports"]:
            # Nothing to filter: leave no tables behind either.
            if self.record["tables"]:
                await self._delete_tables()
            self._done.pop("nft", None)
        elif self._done.get("nft") != text:
            await run("nft", "-f", "-", input=text.encode())
            self._done["nft"] = text
            if not self.record["tables"]:
                self.record["tables"] = True
                self._save()
        wanted_ns: set[str] = set()
        wanted_links: set[str] = set()
        for d in state["dhcp"]:
            # Wanted even when this pass fails, so that a failure never deletes a working DHCP server.
            wanted_ns.add(f"qdhcp-{d['network_id']}")
            wanted_links.add(d["port"]["tap"])
            try:
                await self._apply_dhcp(d, state["networks"][d["network_id"]]["bridge"], links, namespaces)
            except (CommandError, OSError) as exc:
                failures.append(f"DHCP of network {d['network_id']}: {exc}")
        for r in state["routers"]:
            wanted_ns.add(f"qrouter-{r['id']}")
            wanted_links.update(i["tap"] for i in r["interfaces"])
            if r["gateway"]:
                wanted_links.add(r["gateway"]["tap"])
            try:
                await self._apply_router(r, state["networks"], links, namespaces)
            except (CommandError, OSError) as exc:
                failures.append(f"router {r['id']}: {exc}")
        await self._remove_unwanted(state, wanted_ns, wanted_links, links)
        self.failures = failures
        return wired

    @staticmethod
    async def _bridge_netfilter() -> str | None:
        """Security groups filter bridged IP traffic in the inet table: br_netfilter must pass it there."""
        base = Path("/proc/sys/net/bridge")
        if not (base / "bridge-nf-call-iptables").exists():
            await run("modprobe", "br_netfilter", check=False)
        if not (base / "bridge-nf-call-iptables").exists():
            return ("security groups cannot filter bridged traffic: br_netfilter is not available "
                    "(modprobe br_netfilter)")
        for name in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
            path = base / name
            try:
                if path.read_text().strip() != "1":
                    path.write_text("1\n")
            except OSError as exc:
                return f"could not enable net.bridge.{name}: {exc}"
        return None

    async def taps_changed(self, state: dict) -> bool:
        try:
            present = set(os.listdir("/sys/class/net"))
        except OSError:
            return False
        return any((p["tap"] in present) != self._taps_seen.get(p["tap"], False) for p in state["ports"])

    # ---- namespaces and veths ------------------------------------------------------------

    async def _ensure_ns(self, ns: str, namespaces: set[str]) -> None:
        if ns not in namespaces:
            await run("ip", "netns", "add", ns)
            self._remember("namespaces", ns)
            namespaces.add(ns)
            await run("ip", "-n", ns, "link", "set", "lo", "up")

    async def _ensure_veth(self, host_end: str, ns_end: str, ns: str, mac: str, mtu: int, bridge: str,
                           links: dict) -> None:
        ns_links = await self.links(ns)
        if ns_end not in ns_links:
            if host_end in links:
                await run("ip", "link", "del", host_end, check=False)
            await run("ip", "link", "add", host_end, "mtu", str(mtu), "type", "veth", "peer", "name", ns_end,
                      "mtu", str(mtu), "netns", ns)
            self._remember("links", host_end)
            links[host_end] = {"ifname": host_end}
            await run("ip", "-n", ns, "link", "set", ns_end, "address", mac)
            await run("ip", "-n", ns, "link", "set", ns_end, "up")
        if links.get(host_end, {}).get("master") != bridge:
            await run("ip", "link", "set", host_end, "master", bridge, "up")
            links[host_end]["master"] = bridge

    async def _set_addresses(self, ns: str, dev: str, wanted: set[str]) -> None:
        have = await self.addresses(ns, dev)
        for a in sorted(wanted - have):
            await run("ip", "-n", ns, "addr", "replace", a, "dev", dev)
        for a in sorted(have - wanted):
            await run("ip", "-n", ns, "addr", "del", a, "dev", dev, check=False)

    # ---- DHCP + metadata -----------------------------------------------------------------

    def _metadata_lookup(self, network_id: str, ip: str) -> dict | None:
        return self._dhcp_hosts.get(network_id, {}).get(ip)

    async def _apply_dhcp(self, d: dict, bridge: str, links: dict, namespaces: set[str]) -> str:
        net_id = d["network_id"]
        ns = f"qdhcp-{net_id}"
        port = d["port"]
        dev = f"ns-{short(port['id'])}"
        self._dhcp_hosts[net_id] = {h["ip"]: h for h in d["hosts"]}
        addrs = {f"{a['ip']}/{a['prefixlen']}" for a in port["ips"] if a["version"] == 4}
        addrs.add(f"{METADATA_IP}/32")
        sig = (port["mac"], d["mtu"], tuple(sorted(addrs)), bridge)
        if self._done.get(f"dhcpdev:{ns}") != sig or ns not in namespaces or port["tap"] not in links:
            await self._ensure_ns(ns, namespaces)
            await self._ensure_veth(port["tap"], dev, ns, port["mac"], d["mtu"], bridge, links)
            await self._set_addresses(ns, dev, addrs)
            self._done[f"dhcpdev:{ns}"] = sig
        await self._dnsmasq(d, ns, dev)
        try:
            await self.metadata.ensure(ns, net_id)
        except OSError as exc:
            log.warning("metadata proxy in %s could not listen: %s", ns, exc)
        return ns

    def _dhcp_files(self, d: dict, dev: str) -> tuple[str, str, list[str]]:
        hosts = "".join(f"{h['mac']},{h['hostname']},{h['ip']}\n" for h in sorted(d["hosts"], key=lambda h: h["ip"]))
        dhcp_ip = next((a["ip"] for a in d["port"]["ips"] if a["version"] == 4), None)
        opts = []
        ranges = []
        for sn in d["subnets"]:
            net = ipaddress.ip_network(sn["cidr"])
            tag = f"subnet-{short(sn['id'])}"
            ranges.append(f"--dhcp-range=set:{tag},{net.network_address},static,{net.netmask},86400s")
            routes = []
            if dhcp_ip and ipaddress.ip_address(dhcp_ip) in net:
                routes.append(f"{METADATA_IP}/32,{dhcp_ip}")
            routes += [f"{r['destination']},{r['nexthop']}" for r in sn["host_routes"]]
            if sn["gateway_ip"]:
                routes.append(f"0.0.0.0/0,{sn['gateway_ip']}")
                opts.append(f"tag:{tag},option:router,{sn['gateway_ip']}")
            else:
                opts.append(f"tag:{tag},option:router")
            if routes:
                opts.append(f"tag:{tag},option:classless-static-route,{','.join(routes)}")
            if sn["dns_nameservers"]:
                opts.append(f"tag:{tag},option:dns-server,{','.join(sn['dns_nameservers'])}")
            else:
                opts.append(f"tag:{tag},option:dns-server")
            opts.append(f"tag:{tag},option:mtu,{d['mtu']}")
        return hosts, "".join(o + "\n" for o in opts), ranges

    async def _dnsmasq(self, d: dict, ns: str, dev: str) -> None:
        net_id = d["network_id"]
        folder = self.state_dir / "dhcp" / net_id
        folder.mkdir(parents=True, exist_ok=True)
        hosts, opts, ranges = self._dhcp_files(d, dev)
        hosts_file, opts_file, pid_file = folder / "host", folder / "opts", folder / "pid"
        changed = False
        for path, text in ((hosts_file, hosts), (opts_file, opts)):
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                changed = True
        pid = self.record["dnsmasq"].get(ns)
        running = pid is not None and _alive(pid, "dnsmasq")
        args_sig = (tuple(ranges), dev)
        if running and self._done.get(f"dnsmasq:{ns}") not in (None, args_sig):
            os.kill(pid, signal.SIGTERM)
            running = False
        if not running:
            if shutil.which("dnsmasq") is None:
                raise CommandError("the command 'dnsmasq' is not installed (Debian package dnsmasq-base)")
            pid_file.unlink(missing_ok=True)
            await run("ip", "netns", "exec", ns, "dnsmasq", "--no-hosts", "--no-resolv", "--port=0",
                      "--conf-file=/dev/null", "--user=root", "--group=root", f"--pid-file={pid_file}",
                      f"--dhcp-hostsfile={hosts_file}", f"--dhcp-optsfile={opts_file}", "--leasefile-ro",
                      "--bind-interfaces", f"--interface={dev}", "--except-interface=lo",
                      f"--domain={self.settings['dns_domain'].rstrip('.')}", "--dhcp-authoritative", *ranges)
            for _ in range(50):
                if pid_file.exists() and pid_file.read_text().strip():
                    break
                await asyncio.sleep(0.02)
            self.record["dnsmasq"][ns] = int(pid_file.read_text().strip())
            self._save()
            self._done[f"dnsmasq:{ns}"] = args_sig
        elif changed:
            os.kill(pid, signal.SIGHUP)
        else:
            self._done.setdefault(f"dnsmasq:{ns}", args_sig)

    async def _stop_dnsmasq(self, ns: str) -> None:
        pid = self.record["dnsmasq"].pop(ns, None)
        self._save()
        if pid is not None and _alive(pid, "dnsmasq"):
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not _alive(pid, "dnsmasq"):
                    break
                await asyncio.sleep(0.02)

    # ---- routers -------------------------------------------------------------------------

    async def _apply_router(self, r: dict, networks: dict, links: dict, namespaces: set[str]) -> str:
        ns = f"qrouter-{r['id']}"
        fresh = ns not in namespaces
        await self._ensure_ns(ns, namespaces)
        if fresh or self._done.get(f"fwd:{ns}") is None:
            # /proc/sys/net shows the namespace of the process that opens it (no procps needed).
            await run("ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
            await run("ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
                      check=False)
            self._done[f"fwd:{ns}"] = True
        wanted_devs = set()
        for i in r["interfaces"]:
            net = networks.get(i["network_id"])
            if net is None:
                continue
            dev = f"qr-{short(i['port_id'])}"
            wanted_devs.add(dev)
            await self._ensure_veth(i["tap"], dev, ns, i["mac"], net["mtu"], net["bridge"], links)
            await self._set_addresses(ns, dev, {f"{a['ip']}/{a['prefixlen']}" for a in i["ips"]})
        gw = r["gateway"]
        gateway_for_nat = None
        if gw and gw["network_id"] in networks:
            net = networks[gw["network_id"]]
            dev = f"qg-{short(gw['port_id'])}"
            wanted_devs.add(dev)
            await self._ensure_veth(gw["tap"], dev, ns, gw["mac"], net["mtu"], net["bridge"], links)
            addrs = {f"{a['ip']}/{a['prefixlen']}" for a in gw["ips"]}
            addrs |= {f"{f['floating_ip']}/32" for f in r["floating_ips"]}
            await self._set_addresses(ns, dev, addrs)
            if gw.get("gateway_ip"):
                await run("ip", "-n", ns, "route", "replace", "default", "via", gw["gateway_ip"], "dev", dev)
            gateway_for_nat = {**gw, "device": dev}
        for route in r["routes"]:
            await run("ip", "-n", ns, "route", "replace", route["destination"], "via", route["nexthop"], check=False)
        for name, info in (await self.links(ns)).items():
            if name.startswith(("qr-", "qg-")) and name not in wanted_devs:
                await run("ip", "-n", ns, "link", "del", name, check=False)
        text = nftrules.render_router_nat("stratus-nat", gateway_for_nat, r["interfaces"], r["floating_ips"])
        if self._done.get(f"nat:{ns}") != text or fresh:
            await run("ip", "netns", "exec", ns, "nft", "-f", "-", input=text.encode())
            self._done[f"nat:{ns}"] = text
        return ns

    # ---- removal -------------------------------------------------------------------------

    async def _remove_unwanted(self, state: dict, wanted_ns: set[str], wanted_links: set[str], links: dict) -> None:
        for ns in list(self.record["namespaces"]):
            if ns not in wanted_ns:
                await self._delete_ns(ns)
        wanted_bridges = {n["bridge"] for n in state["networks"].values()}
        wanted_uplinks = {f"vxlan-{n['segmentation_id']}" for n in state["networks"].values()
                          if n["network_type"] == "vxlan"}
        for n in state["networks"].values():
            if n["network_type"] == "vlan":
                phys = self.settings["physical_interface_mappings"].get(n["physical_network"], "")
                wanted_uplinks.add(f"{phys[:9]}.{n['segmentation_id']}")
        # The listing taken at the start of this pass (plus what it created) is good enough: deleting
        # something already gone is harmless.
        current = links
        for name in list(self.record["links"]):
            if name not in wanted_links and name not in wanted_uplinks:
                if name in current:
                    await run("ip", "link", "del", name, check=False)
                self._forget("links", name)
                self._done.pop(f"fdb:{name}", None)
        for name in list(self.record["bridges"]):
            if name not in wanted_bridges:
                if name in current:
                    await run("ip", "link", "del", name, check=False)
                self._forget("bridges", name)

    async def _delete_ns(self, ns: str) -> None:
        await self._stop_dnsmasq(ns)
        await self.metadata.remove(ns)
        if ns.startswith("qdhcp-"):
            self._dhcp_hosts.pop(ns[len("qdhcp-"):], None)
        for key in [k for k in self._done if k.endswith(":" + ns)]:
            del self._done[key]
        await run("ip", "netns", "del", ns, check=False)
        self._forget("namespaces", ns)

    async def teardown(self) -> None:
        async with self._lock:
            for ns in list(self.record["namespaces"]):
                await self._delete_ns(ns)
            for ns in list(self.record["dnsmasq"]):
                await self._stop_dnsmasq(ns)
            current = await self.links()
            for name in list(self.record["links"]):
                if name in current:
                    await run("ip", "link", "del", name, check=False)
                self._forget("links", name)
            for name in list(self.record["bridges"]):
                if name in current:
                    await run("ip", "link", "del", name, check=False)
                self._forget("bridges", name)
            if self.record["tables"]:
                await self._delete_tables()
            self._done.clear()

    async def _delete_tables(self) -> None:
        await run("nft", "delete", "table", "bridge", self.table, check=False)
        await run("nft", "delete", "table", "inet", self.table, check=False)
        self.record["tables"] = False
        self._save()

    async def close(self) -> None:
        await self.metadata.close()


def _alive(pid: int, name: str) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == name
    except OSError:
        return False
