"""The [volume] section: defaults, derived values and messages that name the bad key."""

from __future__ import annotations

import pytest

from stratus import config as config_mod
from stratus.volume import settings


def load(tmp_path, **volume):
    cfg = config_mod.load(environ={}, overrides={"state_dir": str(tmp_path), "volume": volume})
    return settings.load(cfg)


def test_defaults_follow_the_state_dir_and_server_address(tmp_path):
    s = load(tmp_path)
    assert s["path"] == str(tmp_path / "volumes")
    assert s["export_address"] == "127.0.0.1" and s["format"] == "qcow2" and s["run_agent"] is True
    assert load(tmp_path, export_address="10.0.0.5")["export_address"] == "10.0.0.5"


@pytest.mark.parametrize("key, value, words", [
    ("colour", "red", "volume.colour"),
    ("format", "vmdk", "volume.format"),
    ("local_attach", "iscsi", "volume.local_attach"),
    ("export_port_min", "low", "volume.export_port_min"),
    ("run_agent", "yes", "volume.run_agent"),
])
def test_bad_values_name_their_key(tmp_path, key, value, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        load(tmp_path, **{key: value})
