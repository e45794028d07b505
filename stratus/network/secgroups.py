"""Security groups and their rules (mixed into NetworkManager)."""

from __future__ import annotations

import asyncio
import ipaddress

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from stratus.common.context import RequestContext
from stratus.common.db import new_uuid, utcnow
from stratus.common.errors import BadRequest, Conflict, Forbidden
from stratus.network import models as m
from stratus.network.common import check_tags, not_found, ts, want, want_bool

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132, "gre": 47, "esp": 50,
             "ah": 51, "dccp": 33, "igmp": 2, "ipip": 4, "ospf": 89, "pgm": 113, "vrrp": 112, "udplite": 136}
PORTED = {"tcp", "udp", "sctp", "dccp", "udplite", "6", "17", "132", "33", "136"}


def rule_view(r: m.SecurityGroupRule, default_ids: set[str] = frozenset()) -> dict:
    return {"id": r.id, "project_id": r.project_id, "tenant_id": r.project_id,
            "security_group_id": r.security_group_id, "direction": r.direction, "ethertype": r.ethertype,
            "protocol": r.protocol, "port_range_min": r.port_range_min, "port_range_max": r.port_range_max,
            "remote_ip_prefix": r.remote_ip_prefix, "remote_group_id": r.remote_group_id,
            "remote_address_group_id": None,
            "normalized_cidr": str(ipaddress.ip_network(r.remote_ip_prefix, strict=False))
            if r.remote_ip_prefix else None,
            "description": r.description, "created_at": ts(r.created_at), "updated_at": ts(r.updated_at),
            "revision_number": r.revision_number, "tags": [],
            "belongs_to_default_sg": r.security_group_id in default_ids}


class SecurityGroupMixin:
    async def _default_ids(self, s) -> set[str]:
        return set((await s.scalars(sa.select(m.DefaultSecurityGroup.security_group_id))).all())

    def sg_view(self, sg: m.SecurityGroup, rules: list[m.SecurityGroupRule], default_ids: set[str]) -> dict:
        return {"id": sg.id, "name": sg.name, "description": sg.description, "project_id": sg.project_id,
                "tenant_id": sg.project_id, "stateful": sg.stateful, "shared": False, "tags": list(sg.tags or []),
                "created_at": ts(sg.created_at), "updated_at": ts(sg.updated_at),
                "revision_number": sg.revision_number,
                "security_group_rules": [rule_view(r, default_ids) for r in rules]}

    async def default_security_group_id(self, s, project_id: str) -> str:
        """The project's `default` group, created on first need with neutron's four rules."""
        existing = await s.get(m.DefaultSecurityGroup, project_id)
        if existing is not None:
            return existing.security_group_id
        sg_id = new_uuid()
        try:
            async with s.begin_nested():
                s.add(m.SecurityGroup(id=sg_id, project_id=project_id, name="default",
                                      description="Default security group"))
                await s.flush()
                s.add(m.DefaultSecurityGroup(project_id=project_id, security_group_id=sg_id))
                await s.flush()
                for eth in ("IPv4", "IPv6"):
                    s.add(m.SecurityGroupRule(id=new_uuid(), project_id=project_id, security_group_id=sg_id,
                                              direction="egress", ethertype=eth))
                    s.add(m.SecurityGroupRule(id=new_uuid(), project_id=project_id, security_group_id=sg_id,
                                              direction="ingress", ethertype=eth, remote_group_id=sg_id))
                await s.flush()
        except IntegrityError:
            # A concurrent request made it first. Under REPEATABLE READ (MariaDB) its row may be
            # invisible to this transaction: then the error goes up and the caller retries afresh.
            existing = await s.get(m.DefaultSecurityGroup, project_id, populate_existing=True)
            if existing is None:
                raise
            return existing.security_group_id
        return sg_id

    async def ensure_default_group(self, project_id: str) -> None:
        if not project_id:
            return
        for attempt in range(8):
            try:
                async with self.db.session() as s:
                    await self.default_security_group_id(s, project_id)
                return
            except DBAPIError:
                # Lost the race (duplicate key) or a deadlock between the racers: look again.
                if attempt == 7:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))

    async def _security_group(self, s, ctx: RequestContext, sg_id: str, *, write: bool = False) -> m.SecurityGroup:
        sg = await s.get(m.SecurityGroup, sg_id) if isinstance(sg_id, str) else None
        if sg is None or (not ctx.is_admin and sg.project_id != ctx.project_id):
            raise not_found("SecurityGroup", sg_id)
        return sg

    async def _rules_of(self, s, sg_ids: list[str]) -> dict[str, list[m.SecurityGroupRule]]:
        out: dict[str, list] = {i: [] for i in sg_ids}
        if sg_ids:
            for r in (await s.scalars(sa.select(m.SecurityGroupRule).where(
                    m.SecurityGroupRule.security_group_id.in_(sg_ids)).order_by(m.SecurityGroupRule.created_at))).all():
                out[r.security_group_id].append(r)
        return out

    async def list_security_groups(self, ctx: RequestContext) -> list[dict]:
        await self.ensure_default_group(ctx.project_id)
        async with self.db.reader() as s:
            q = sa.select(m.SecurityGroup)
            if not ctx.is_admin:
                q = q.where(m.SecurityGroup.project_id == ctx.project_id)
            groups = (await s.scalars(q.order_by(m.SecurityGroup.created_at))).all()
            rules = await self._rules_of(s, [g.id for g in groups])
            defaults = await self._default_ids(s)
            return [self.sg_view(g, rules[g.id], defaults) for g in groups]

    async def get_security_group(self, ctx: RequestContext, sg_id: str) -> dict:
        async with self.db.reader() as s:
            sg = await self._security_group(s, ctx, sg_id)
            return self.sg_view(sg, (await self._rules_of(s, [sg.id]))[sg.id], await self._default_ids(s))

    async def create_security_group(self, ctx: RequestContext, body: dict) -> dict:
        where = "security_group"
        project = self.owner(ctx, body, where)
        name = want(body, "name", str, where=where, default="")
        if name == "default":
            raise Conflict("Default security group already exists.", kind="SecurityGroupDefaultAlreadyExists")
        await self.ensure_default_group(project)
        async with self.db.session() as s:
            await self.check_quota(s, project, "security_group")
            sg = m.SecurityGroup(id=new_uuid(), project_id=project, name=name,
                                 description=want(body, "description", str, where=where, default=""),
                                 stateful=want_bool(body, "stateful", where=where, default=True),
                                 tags=check_tags(body.get("tags", [])))
            s.add(sg)
            await s.flush()
            rules = []
            for eth in ("IPv4", "IPv6"):
                r = m.SecurityGroupRule(id=new_uuid(), project_id=project, security_group_id=sg.id,
                                        direction="egress", ethertype=eth)
                s.add(r)
                rules.append(r)
            await s.flush()
            return self.sg_view(sg, rules, set())

    async def update_security_group(self, ctx: RequestContext, sg_id: str, body: dict) -> dict:
        where = "security_group"
        async with self.db.session() as s:
            sg = await self._security_group(s, ctx, sg_id, write=True)
            defaults = await self._default_ids(s)
            if "name" in body:
                name = want(body, "name", str, where=where)
                if sg.id in defaults and name != "default":
                    raise Conflict("Updating default security group not allowed.", kind="SecurityGroupCannotUpdateDefault")
                sg.name = name
            if "description" in body:
                sg.description = want(body, "description", str, where=where)
            if "stateful" in body:
                sg.stateful = want_bool(body, "stateful", where=where)
            sg.updated_at = utcnow()
            sg.revision_number += 1
            return self.sg_view(sg, (await self._rules_of(s, [sg.id]))[sg.id], defaults)

    async def delete_security_group(self, ctx: RequestContext, sg_id: str) -> None:
        async with self.db.session() as s:
            sg = await self._security_group(s, ctx, sg_id, write=True)
            if sg.id in await self._default_ids(s) and not ctx.is_admin:
                raise Conflict("Insufficient rights for removing default security group.",
                               kind="SecurityGroupCannotRemoveDefault")
            in_use = (await s.execute(sa.select(m.Port.id, m.Port.security_groups))).all()
            users = [pid for pid, groups in in_use if sg.id in (groups or [])]
            if users:
                raise Conflict(f"Security Group {sg.id} in use (by port {users[0]}).", kind="SecurityGroupInUse")
            await s.execute(sa.delete(m.SecurityGroupRule).where(m.SecurityGroupRule.security_group_id == sg.id))
            await s.execute(sa.delete(m.DefaultSecurityGroup).where(m.DefaultSecurityGroup.security_group_id == sg.id))
            await s.delete(sg)
        await self.nudge_agents()

    # ---- rules ---------------------------------------------------------------------------

    async def list_rules(self, ctx: RequestContext) -> list[dict]:
        await self.ensure_default_group(ctx.project_id)
        async with self.db.reader() as s:
            q = sa.select(m.SecurityGroupRule)
            if not ctx.is_admin:
                own = sa.select(m.SecurityGroup.id).where(m.SecurityGroup.project_id == ctx.project_id)
                q = q.where(sa.or_(m.SecurityGroupRule.project_id == ctx.project_id,
                                   m.SecurityGroupRule.security_group_id.in_(own)))
            defaults = await self._default_ids(s)
            return [rule_view(r, defaults) for r in (await s.scalars(q.order_by(m.SecurityGroupRule.created_at))).all()]

    async def _rule(self, s, ctx, rule_id: str) -> m.SecurityGroupRule:
        r = await s.get(m.SecurityGroupRule, rule_id) if isinstance(rule_id, str) else None
        if r is None:
            raise not_found("SecurityGroupRule", rule_id)
        sg = await s.get(m.SecurityGroup, r.security_group_id)
        if not ctx.is_admin and r.project_id != ctx.project_id and sg.project_id != ctx.project_id:
            raise not_found("SecurityGroupRule", rule_id)
        return r

    async def get_rule(self, ctx: RequestContext, rule_id: str) -> dict:
        async with self.db.reader() as s:
            return rule_view(await self._rule(s, ctx, rule_id), await self._default_ids(s))

    @staticmethod
    def _check_rule(body: dict) -> dict:
        where = "security_group_rule"
        direction = body.get("direction")
        if direction not in ("ingress", "egress"):
            raise BadRequest(f"Invalid input for direction. Reason: {direction!r} is not in ['ingress', 'egress'].",
                             kind="InvalidInput")
        eth = body.get("ethertype", "IPv4")
        if eth not in ("IPv4", "IPv6"):
            raise BadRequest(f"Invalid input for ethertype. Reason: {eth!r} is not in ['IPv4', 'IPv6'].",
                             kind="InvalidInput")
        proto = body.get("protocol")
        if proto is not None:
            proto = str(proto).lower()
            if proto in ("any", "0", ""):
                proto = None
            elif proto not in PROTOCOLS and not (proto.isdigit() and 0 <= int(proto) <= 255):
                raise BadRequest(f"Security group rule protocol {proto} not supported. Only protocol values "
                                 f"{sorted(PROTOCOLS)} and integer representations [0 to 255] are supported.",
                                 kind="SecurityGroupRuleInvalidProtocol")
        if proto in ("icmp", "1") and eth == "IPv6":
            proto = "ipv6-icmp" if proto == "icmp" else "58"
        if proto in ("icmpv6", "ipv6-icmp", "58") and eth == "IPv4":
            raise BadRequest("Security group rule for ethertype 'IPv4' not supported. Allowed ethertypes are IPv6 "
                             "for protocol ipv6-icmp.", kind="SecurityGroupEthertypeConflictWithProtocol")
        pmin = want(body, "port_range_min", int, where=where, nullable=True)
        pmax = want(body, "port_range_max", int, where=where, nullable=True)
        if (pmin is not None or pmax is not None) and proto is None:
            raise BadRequest("Must also specify protocol if port range is given.",
                             kind="SecurityGroupProtocolRequiredWithPorts")
        if proto in PORTED:
            if pmin is not None and pmax is None or pmax is not None and pmin is None:
                pmax = pmax if pmax is not None else pmin
                pmin = pmin if pmin is not None else pmax
            if pmin is not None and not (1 <= pmin <= pmax <= 65535):
                raise BadRequest(f"Invalid port range {pmin}:{pmax}: ports are 1-65535 and min <= max.",
                                 kind="SecurityGroupInvalidPortRange")
        elif proto in ("icmp", "icmpv6", "ipv6-icmp", "1", "58"):
            for label, v in (("type", pmin), ("code", pmax)):
                if v is not None and not 0 <= v <= 255:
                    raise BadRequest(f"Invalid value for ICMP {label} {v}: 0-255.", kind="SecurityGroupInvalidIcmpValue")
            if pmax is not None and pmin is None:
                raise BadRequest("ICMP code (port-range-max) is given without an ICMP type (port-range-min).",
                                 kind="SecurityGroupMissingIcmpType")
        elif pmin is not None or pmax is not None:
            raise BadRequest(f"Port ranges are not supported for protocol {proto}.", kind="SecurityGroupInvalidPortRange")
        prefix = body.get("remote_ip_prefix")
        group = body.get("remote_group_id")
        for key, value in (("remote_ip_prefix", prefix), ("remote_group_id", group)):
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"Invalid input for {key}: {value!r} is not a string.", kind="InvalidInput")
        if prefix and group:
            raise BadRequest("Only remote_ip_prefix or remote_group_id may be provided.",
                             kind="SecurityGroupRemoteGroupAndRemoteIpPrefix")
        if prefix is not None:
            try:
                net = ipaddress.ip_network(prefix, strict=False)
            except (ValueError, TypeError):
                raise BadRequest(f"Invalid input for remote_ip_prefix: '{prefix}' is not a CIDR.",
                                 kind="InvalidInput") from None
            if f"IPv{net.version}" != eth:
                raise BadRequest(f"Conflicting value ethertype {eth} for CIDR {prefix}.",
                                 kind="SecurityGroupRuleParameterConflict")
            if net.prefixlen == 0:
                prefix = None
            else:
                prefix = str(net) if "/" in str(prefix) else f"{prefix}/{net.max_prefixlen}"
        return {"direction": direction, "ethertype": eth, "protocol": proto, "port_range_min": pmin,
                "port_range_max": pmax, "remote_ip_prefix": prefix, "remote_group_id": group,
                "description": want(body, "description", str, where=where, default="")}

    async def create_rule(self, ctx: RequestContext, body: dict) -> dict:
        sg_id = want(body, "security_group_id", str, where="security_group_rule", required=True)
        spec = self._check_rule(body)
        async with self.db.session() as s:
            sg = await self._security_group(s, ctx, sg_id, write=True)
            if spec["remote_group_id"]:
                await self._security_group(s, ctx, spec["remote_group_id"])
            project = self.owner(ctx, body, "security_group_rule") if (body.get("project_id") or
                                                                         body.get("tenant_id")) else sg.project_id
            await self.check_quota(s, project, "security_group_rule")
            for r in (await self._rules_of(s, [sg.id]))[sg.id]:
                same = all(getattr(r, k) == spec[k] for k in ("direction", "ethertype", "protocol", "port_range_min",
                                                                "port_range_max", "remote_ip_prefix",
                                                                "remote_group_id"))
                if same:
                    raise Conflict(f"Security group rule already exists. Rule id is {r.id}.",
                                   kind="SecurityGroupRuleExists")
            r = m.SecurityGroupRule(id=new_uuid(), project_id=project, security_group_id=sg.id, **spec)
            s.add(r)
            sg.revision_number += 1
            await s.flush()
            view = rule_view(r, await self._default_ids(s))
        await self.nudge_agents()
        return view

    async def delete_rule(self, ctx: RequestContext, rule_id: str) -> None:
        async with self.db.session() as s:
            r = await self._rule(s, ctx, rule_id)
            sg = await s.get(m.SecurityGroup, r.security_group_id)
            if not ctx.is_admin and sg.project_id != ctx.project_id:
                raise Forbidden("Only the group's owner may remove its rules.", kind="PolicyNotAuthorized")
            await s.delete(r)
            sg.revision_number += 1
        await self.nudge_agents()
