"""Policy: who may do what, as small rule expressions that a policy file can override.

Rule language (the same spirit as oslo.policy, our own small parser):
  ``@`` always, ``!`` never, ``role:NAME``, ``rule:NAME`` (another rule), ``is_admin:True``,
  ``system_scope:all``, ``<credential>:%(<target key>)s`` (e.g. ``project_id:%(project_id)s``),
  combined with ``and``, ``or``, ``not`` and parentheses.
Roles in a token already include implied roles (admin implies member implies reader), so
``role:reader`` also admits members and admins.

Each service passes its default rules; a policy file (YAML or JSON mapping of rule name to
expression), named by the ``policy.file`` setting, overrides any of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from stratus.common.context import RequestContext
from stratus.common.errors import Forbidden

# Rules shared by every service's defaults.
BASE_RULES = {
    "admin": "role:admin",
    "project_member": "role:member and project_id:%(project_id)s",
    "project_reader": "role:reader and project_id:%(project_id)s",
    "admin_or_member": "rule:admin or rule:project_member",
    "admin_or_reader": "rule:admin or rule:project_reader",
    "owner": "user_id:%(user_id)s",
}

# "%(key)s" keeps its parentheses; bare "(" and ")" group.
_TOKEN = re.compile(r"\s*(\(|\)|(?:%\([^)]*\)s|[^\s()])+)")


class PolicyError(Exception):
    pass


def _tokenize(expr: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(expr)]


Check = Callable[[dict, dict, "Enforcer"], bool]


def _parse(tokens: list[str], pos: int = 0) -> tuple[Check, int]:
    left, pos = _parse_and(tokens, pos)
    while pos < len(tokens) and tokens[pos] == "or":
        right, pos = _parse_and(tokens, pos + 1)
        left = (lambda a, b: lambda c, t, e: a(c, t, e) or b(c, t, e))(left, right)
    return left, pos


def _parse_and(tokens, pos):
    left, pos = _parse_not(tokens, pos)
    while pos < len(tokens) and tokens[pos] == "and":
        right, pos = _parse_not(tokens, pos + 1)
        left = (lambda a, b: lambda c, t, e: a(c, t, e) and b(c, t, e))(left, right)
    return left, pos


def _parse_not(tokens, pos):
    if pos < len(tokens) and tokens[pos] == "not":
        inner, pos = _parse_not(tokens, pos + 1)
        return (lambda a: lambda c, t, e: not a(c, t, e))(inner), pos
    return _parse_atom(tokens, pos)


def _parse_atom(tokens, pos):
    if pos >= len(tokens):
        raise PolicyError("unexpected end of rule")
    tok = tokens[pos]
    if tok == "(":
        inner, pos = _parse(tokens, pos + 1)
        if pos >= len(tokens) or tokens[pos] != ")":
            raise PolicyError("missing ')'")
        return inner, pos + 1
    if tok == "@":
        return (lambda c, t, e: True), pos + 1
    if tok == "!":
        return (lambda c, t, e: False), pos + 1
    if ":" not in tok:
        raise PolicyError(f"cannot understand {tok!r}")
    kind, _, value = tok.partition(":")
    if kind == "role":
        return (lambda c, t, e: value in c["roles"]), pos + 1
    if kind == "rule":
        return (lambda c, t, e: e.check_rule(value, c, t)), pos + 1
    if value.startswith("%(") and value.endswith(")s"):
        key = value[2:-2]

        def match(c, t, e, kind=kind, key=key):
            want = t.get(key)
            have = c.get(kind)
            return want is not None and have is not None and str(want) == str(have)

        return match, pos + 1
    literal = value

    def match_literal(c, t, e, kind=kind, literal=literal):
        have = c.get(kind)
        if isinstance(have, bool):
            return str(have).lower() == literal.lower()
        return have is not None and str(have) == literal

    return match_literal, pos + 1


def compile_rule(expr: str) -> Check:
    expr = expr.strip()
    if expr == "":
        return lambda c, t, e: True
    tokens = _tokenize(expr)
    check, pos = _parse(tokens)
    if pos != len(tokens):
        raise PolicyError(f"unexpected {tokens[pos]!r} in rule {expr!r}")
    return check


class Enforcer:
    def __init__(self, defaults: dict[str, str], policy_file: str | None = None):
        rules = {**BASE_RULES, **defaults}
        if policy_file:
            rules.update(load_policy_file(policy_file))
        self.sources = rules
        try:
            self.rules = {name: compile_rule(expr) for name, expr in rules.items()}
        except PolicyError as exc:
            raise PolicyError(f"bad policy rule: {exc}") from None

    def check_rule(self, name: str, creds: dict, target: dict) -> bool:
        rule = self.rules.get(name)
        if rule is None:
            return False
        return rule(creds, target, self)

    def allowed(self, ctx: RequestContext, action: str, target: dict[str, Any] | None = None) -> bool:
        if action not in self.rules:
            # An action nobody wrote a rule for is an admin-only action, never an open one.
            return "admin" in ctx.roles
        return self.check_rule(action, ctx.policy_creds(), target or {})

    def enforce(self, ctx: RequestContext, action: str, target: dict[str, Any] | None = None) -> None:
        if not self.allowed(ctx, action, target):
            raise Forbidden(f"Policy doesn't allow {action} to be performed.")


def load_policy_file(path: str) -> dict[str, str]:
    text = Path(path).read_text()
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise PolicyError(f"policy file {path} must map rule names to rule strings")
    return data
