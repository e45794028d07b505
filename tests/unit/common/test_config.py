import pytest

from stratus import config


def test_defaults_and_env_override():
    cfg = config.load(environ={"STRATUS_SERVER__PORT": "9001", "STRATUS_DEBUG": "true",
                               "STRATUS_SERVICES__ENABLED": "identity,image"})
    assert cfg["server"]["port"] == 9001
    assert cfg["debug"] is True
    assert cfg.enabled_services == ["identity", "image"]
    assert cfg.public_url == "http://127.0.0.1:9001"
    assert cfg.database_url("identity").endswith("/var/lib/stratus/identity.sqlite")


def test_file_then_env_then_overrides(tmp_path):
    f = tmp_path / "stratus.toml"
    f.write_text('state_dir = "/srv/st"\n[server]\nport = 7000\nhost = "0.0.0.0"\n[compute]\ndriver = "fake"\n')
    cfg = config.load(f, environ={"STRATUS_SERVER__PORT": "7001"}, overrides={"server": {"workers": 2}})
    assert cfg["server"]["port"] == 7001 and cfg["server"]["workers"] == 2
    assert cfg.section("compute")["driver"] == "fake"
    assert str(cfg.state_dir) == "/srv/st"
    assert cfg.public_url == "http://127.0.0.1:7001"


@pytest.mark.parametrize("env,key", [
    ({"STRATUS_SERVER__PROT": "1"}, "server.prot"),
    ({"STRATUS_SERVER__PORT": "abc"}, "server.port"),
    ({"STRATUS_BUS__TRANSPORT": "carrier-pigeon"}, "bus.transport"),
    ({"STRATUS_SERVICES__ENABLED": "identity,dns"}, "services.enabled"),
    ({"STRATUS_IDENTITY__ARGON2_MEMORY_KIB": "1024"}, "identity.argon2_memory_kib"),
    ({"STRATUS_DEBUG": "[1]"}, "debug"),
])
def test_bad_values_name_the_key(env, key):
    with pytest.raises(config.ConfigError) as exc:
        config.load(environ=env)
    assert key in str(exc.value)


def test_bad_file_is_reported(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[server\nport = 1")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(f, environ={})
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml", environ={})
