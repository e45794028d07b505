"""Server states: vm_state + task_state → the API's status, and which actions each state allows."""

from __future__ import annotations

# vm_states
ACTIVE = "active"
BUILDING = "building"
PAUSED = "paused"
SUSPENDED = "suspended"
STOPPED = "stopped"
RESCUED = "rescued"
RESIZED = "resized"
SOFT_DELETED = "soft-delete"
DELETED = "deleted"
ERROR = "error"
SHELVED = "shelved"
SHELVED_OFFLOADED = "shelved_offloaded"

_DEFAULT_STATUS = {
    ACTIVE: "ACTIVE", BUILDING: "BUILD", PAUSED: "PAUSED", SUSPENDED: "SUSPENDED", STOPPED: "SHUTOFF",
    RESCUED: "RESCUE", RESIZED: "VERIFY_RESIZE", SOFT_DELETED: "SOFT_DELETED", DELETED: "DELETED",
    ERROR: "ERROR", SHELVED: "SHELVED", SHELVED_OFFLOADED: "SHELVED_OFFLOADED",
}

_REBOOT_TASKS = {"rebooting", "reboot_pending", "reboot_started"}
_HARD_REBOOT_TASKS = {"rebooting_hard", "reboot_pending_hard", "reboot_started_hard"}
_REBUILD_TASKS = {"rebuilding", "rebuild_block_device_mapping", "rebuild_spawning"}
_RESIZE_TASKS = {"resize_prep", "resize_migrating", "resize_migrated", "resize_finish"}

# Statuses a client may filter by (?status=); 2.38+ refuses anything else.
KNOWN_STATUSES = {"ACTIVE", "BUILD", "DELETED", "ERROR", "HARD_REBOOT", "MIGRATING", "PASSWORD", "PAUSED",
                  "REBOOT", "REBUILD", "RESCUE", "RESIZE", "REVERT_RESIZE", "SHELVED", "SHELVED_OFFLOADED",
                  "SHUTOFF", "SOFT_DELETED", "SUSPENDED", "UNKNOWN", "VERIFY_RESIZE"}


def status(vm_state: str, task_state: str | None) -> str:
    task = task_state or ""
    if vm_state in (ACTIVE, STOPPED, ERROR) and task in _REBUILD_TASKS:
        return "REBUILD"
    if vm_state in (ACTIVE, STOPPED) and task in _RESIZE_TASKS:
        return "RESIZE"
    if vm_state == ACTIVE:
        if task in _REBOOT_TASKS:
            return "REBOOT"
        if task in _HARD_REBOOT_TASKS:
            return "HARD_REBOOT"
        if task == "updating_password":
            return "PASSWORD"
        if task == "migrating":
            return "MIGRATING"
    if vm_state == PAUSED and task == "migrating":
        return "MIGRATING"
    if vm_state == RESIZED and task == "resize_reverting":
        return "REVERT_RESIZE"
    return _DEFAULT_STATUS.get(vm_state, "UNKNOWN")


def vm_states_for_status(name: str) -> list[tuple[str, set[str] | None]]:
    """The (vm_state, task_states) pairs a status filter matches (None = any task state)."""
    name = name.upper()
    out = []
    for vm, st in _DEFAULT_STATUS.items():
        if st == name:
            out.append((vm, None))
    return out


# What each action needs: allowed vm_states, and whether a running task blocks it.
ACTIONS: dict[str, dict] = {
    "reboot_soft": {"vm": {ACTIVE}, "task": {None, "rebooting", "reboot_pending", "reboot_started"}},
    "reboot_hard": {"vm": {ACTIVE, STOPPED, PAUSED, SUSPENDED, ERROR, RESCUED},
                    "task": None},  # hard reboot may interrupt most tasks
    "stop": {"vm": {ACTIVE, RESCUED, ERROR}},
    "start": {"vm": {STOPPED}},
    "pause": {"vm": {ACTIVE, RESCUED}},
    "unpause": {"vm": {PAUSED}},
    "suspend": {"vm": {ACTIVE}},
    "resume": {"vm": {SUSPENDED}},
    "rescue": {"vm": {ACTIVE, STOPPED, ERROR}},
    "unrescue": {"vm": {RESCUED}},
    "resize": {"vm": {ACTIVE, STOPPED}},
    "migrate": {"vm": {ACTIVE, STOPPED}},
    "confirm_resize": {"vm": {RESIZED}},
    "revert_resize": {"vm": {RESIZED}},
    "rebuild": {"vm": {ACTIVE, STOPPED, ERROR}},
    "create_image": {"vm": {ACTIVE, STOPPED, PAUSED, SUSPENDED}},
    "console": {"vm": {ACTIVE, PAUSED, RESCUED}},
    "console_output": {"vm": {ACTIVE, STOPPED, PAUSED, SUSPENDED, RESCUED, ERROR, RESIZED}},
    "evacuate": {"vm": {ACTIVE, STOPPED, ERROR}},
    "lock": {"vm": None},
    "unlock": {"vm": None},
    "change_password": {"vm": {ACTIVE}},
}
