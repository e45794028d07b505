import pytest

from stratus.common.context import RequestContext
from stratus.common.errors import Forbidden
from stratus.common.policy import Enforcer, PolicyError, compile_rule

RULES = {
    "thing:create": "rule:admin_or_member",
    "thing:read": "rule:admin_or_reader",
    "thing:delete": "rule:admin or (role:member and user_id:%(user_id)s)",
    "thing:never": "!",
    "thing:system": "role:admin and system_scope:all",
}


def ctx(roles, project="p1", user="u1", system=False):
    return RequestContext(user_id=user, project_id=project, roles=roles, system_scope=system)


def test_roles_and_project_match():
    e = Enforcer(RULES)
    assert e.allowed(ctx(["member", "reader"]), "thing:create", {"project_id": "p1"})
    assert not e.allowed(ctx(["member", "reader"]), "thing:create", {"project_id": "p2"})
    assert e.allowed(ctx(["reader"]), "thing:read", {"project_id": "p1"})
    assert not e.allowed(ctx(["reader"]), "thing:create", {"project_id": "p1"})
    assert e.allowed(ctx(["admin", "member", "reader"]), "thing:create", {"project_id": "p2"})


def test_parentheses_and_owner():
    e = Enforcer(RULES)
    assert e.allowed(ctx(["member"]), "thing:delete", {"user_id": "u1"})
    assert not e.allowed(ctx(["member"]), "thing:delete", {"user_id": "u2"})
    assert not e.allowed(ctx(["admin"]), "thing:never")
    assert e.allowed(ctx(["admin"], system=True), "thing:system")
    assert not e.allowed(ctx(["admin"]), "thing:system")


def test_unknown_action_is_admin_only_and_enforce_raises():
    e = Enforcer(RULES)
    assert not e.allowed(ctx(["member"]), "thing:unwritten")
    with pytest.raises(Forbidden, match="thing:create"):
        e.enforce(ctx(["reader"]), "thing:create", {"project_id": "p1"})


def test_policy_file_overrides(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text('"thing:create": "role:reader"\n')
    e = Enforcer(RULES, str(f))
    assert e.allowed(ctx(["reader"]), "thing:create", {})


@pytest.mark.parametrize("bad", ["role:a and", "(role:a", "role:a )", "justaword"])
def test_malformed_rules_are_rejected(bad):
    with pytest.raises(PolicyError):
        compile_rule(bad)
