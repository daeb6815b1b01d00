"""Settings: flag > environment > file > default; bad values exit 2 naming them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator._errors import ConfigError
from orchestrator._settings import load_settings

from ..conftest import cli_env


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'heartbeat_interval = 7\nrelay_url = "http://file:1"\n'
                                    'id = "from-file"\n')
    env = {"RELAY_ORCHESTRATOR_HEARTBEAT_INTERVAL": "5", "RELAY_ORCHESTRATOR_ID": "from-env"}
    s = load_settings({"config": str(config), "id": "from-flag"}, environ=env)
    assert s.id == "from-flag" and s.sources["id"] == "flag"
    assert s.heartbeat_interval == 5.0 and s.sources["heartbeat_interval"] == "env"
    assert s.relay_url == "http://file:1" and s.sources["relay_url"] == "file"
    assert s.supervisor == "auto" and s.sources["supervisor"] == "default"


def test_defaults_follow_xdg(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "st"), "XDG_CONFIG_HOME": str(tmp_path / "cf")}
    import os

    old = dict(os.environ)
    os.environ.update(env)
    try:
        s = load_settings({}, environ=env)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert s.state_dir == tmp_path / "st" / "relay-orchestrator"
    assert s.heartbeat_interval == 10.0
    assert s.base_dir == Path.home()
    assert (s.log_max_bytes, s.log_backups) == (10_000_000, 3)  # as an agent's output log


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ('token = "x"\n', "key 'token' not allowed"),
        ("heartbeat_interval = -1\n", "heartbeat_interval"),
        ('supervisor = "runit"\n', "supervisor"),
        ("providers = 3\n", "[providers] must be a table"),
        ("not toml = = \n", "invalid TOML"),
        ("log_max_bytes = 10\n", "log_max_bytes"),
        ("log_max_bytes = 1.5e7\n", "log_max_bytes"),
        ("log_backups = -1\n", "log_backups"),
    ],
)
def test_bad_file_values_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    config = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings({"config": str(config)}, environ={})
    assert needle in str(info.value)
    assert str(config) in str(info.value)


def test_bad_flag_and_env_values_name_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--heartbeat-interval"):
        load_settings({"heartbeat_interval": "soon", "config": str(write_config(tmp_path, ""))},
                      environ={})
    with pytest.raises(ConfigError, match="RELAY_ORCHESTRATOR_RELAY_URL"):
        load_settings({"config": str(tmp_path / "config.toml")},
                      environ={"RELAY_ORCHESTRATOR_RELAY_URL": "ftp://x"})


def test_token_file_must_be_private(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_settings({"token_file": str(token), "config": str(write_config(tmp_path, ""))},
                      environ={})
    token.chmod(0o600)
    s = load_settings({"token_file": str(token), "config": str(tmp_path / "config.toml")},
                      environ={})
    assert s.read_token() == "secret"
    assert "secret" not in repr(s)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True, text=True, timeout=60, env=cli_env(**env),
    )


def test_cli_exit_2_on_bad_settings(tmp_path: Path) -> None:
    config = write_config(tmp_path, "nope = true\n")
    proc = run_cli("run", "--config", str(config), "--relay-url", "http://127.0.0.1:9")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown key 'nope'" in proc.stderr
    proc = run_cli("run", "--config", str(tmp_path / "missing.toml"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    proc = run_cli("run", "--config", str(write_config(tmp_path, "")))
    assert proc.returncode == 2 and "--relay-url is required" in proc.stderr
    proc = run_cli("frobnicate")
    assert proc.returncode == 2


def test_version_from_package_metadata() -> None:
    from importlib.metadata import version

    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == version("relay-orchestrator")


def test_the_tmux_socket_name_stays_what_earlier_versions_used(tmp_path: Path) -> None:
    """Agents in tmux are found again after an upgrade by the socket's name: the
    digest of a non-default state dir must not change (it was hashlib's sha1)."""
    import hashlib

    from orchestrator.daemon._app import tmux_socket

    settings = load_settings(flags={"state_dir": str(tmp_path / "state")}, environ={})
    digest = hashlib.sha1(str((tmp_path / "state").resolve()).encode()).hexdigest()[:8]
    assert tmux_socket(settings) == f"relay-orchestrator-{digest}"
