"""Reading back what an installed service runs with, from the files themselves."""

from __future__ import annotations

import plistlib
import sys
from pathlib import Path

import supervisors
from supervisors._install import render_unit
from supervisors._installed import parse_env_file, split_unit_words
from supervisors._launchd import log_path, plist_path, render_plist
from supervisors._systemd_backend import format_env_file


def test_a_unit_install_wrote_reads_back_with_its_drop_ins_and_environment_file(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    config_dir = home / ".config" / "relay-orchestrator"
    config_dir.mkdir(parents=True)
    token_env = config_dir / "token.env"
    token_env.write_text(format_env_file({"RELAY_ORCHESTRATOR_TOKEN": 'to"k$en`\\x'}))
    odd = "a value with spaces, \"quotes\", 100% and $HOME"
    unit = home / ".config" / "systemd" / "user" / supervisors.SYSTEMD_UNIT
    unit.parent.mkdir(parents=True)
    unit.write_text(render_unit(
        exec_argv=[sys.executable, "-m", "orchestrator", "run"],
        environment={"RELAY_ORCHESTRATOR_RELAY_URL": "http://relay:8080", "ODD": odd},
        environment_file=token_env))
    # What `systemctl --user edit` leaves: a drop-in that adds to the PATH.
    drop_in = unit.with_name(unit.name + ".d")
    drop_in.mkdir()
    (drop_in / "override.conf").write_text(
        "# edited\n[Service]\nEnvironment=PATH=%h/.local/bin:/usr/bin \"EXTRA=x y\"\n")
    (drop_in / "ignored.txt").write_text("[Service]\nEnvironment=NOT=read\n")

    found = supervisors.find_installed(home=home, xdg_config_home=home / ".config")
    assert found is not None and found.kind == "systemd" and found.path == unit
    assert found.exec_argv == (sys.executable, "-m", "orchestrator", "run")
    assert dict(found.environment) == {
        "RELAY_ORCHESTRATOR_RELAY_URL": "http://relay:8080", "ODD": odd,
        "PATH": f"{home}/.local/bin:/usr/bin", "EXTRA": "x y",
        "RELAY_ORCHESTRATOR_TOKEN": 'to"k$en`\\x',
    }
    assert found.sources == (unit, drop_in / "override.conf", token_env)


def test_a_plist_install_wrote_reads_back(tmp_path: Path) -> None:
    home = tmp_path / "home"
    plist = plist_path(home)
    plist.parent.mkdir(parents=True)
    argv = [sys.executable, "-m", "orchestrator", "run", "--token-file", "/t"]
    plist.write_bytes(render_plist(label="relay-orchestrator", program_arguments=argv,
                                   environment={"PATH": "/opt/bin:/usr/bin"},
                                   log_file=log_path(home)))
    found = supervisors.find_installed(home=home, xdg_config_home=home / ".config")
    assert found is not None and found.kind == "launchd"
    assert found.exec_argv == tuple(argv)
    assert dict(found.environment) == {"PATH": "/opt/bin:/usr/bin"}
    plist.write_bytes(plistlib.dumps({"Label": "x"}))
    found = supervisors.find_installed(home=home, xdg_config_home=home / ".config")
    assert found is not None and found.exec_argv == () and dict(found.environment) == {}


def test_nothing_installed(tmp_path: Path) -> None:
    assert supervisors.find_installed(home=tmp_path, xdg_config_home=tmp_path / "c") is None


def test_unit_words_and_env_files_as_systemd_reads_them() -> None:
    assert split_unit_words("/bin/x \"a b\" 'c d' e\\x41 \"t\\tq\\\"\" \"\"") == [
        "/bin/x", "a b", "c d", "eA", 't\tq"', ""]
    assert parse_env_file(
        "# comment\n; too\nA=1\nexport B = two words \nC='x $y'\nD=\"q\\\"\\$\"\nbad line\n"
        "E=con\\\ntinued\n"
    ) == {"A": "1", "B": "two words", "C": "x $y", "D": 'q"$', "E": "continued"}
