"""install/uninstall plans for systemd: the unit file, the token file, the commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from supervisors import (
    InstallError,
    SupervisorConfigError,
    WriteFile,
    _install,
    apply,
    linger_note,
    plan_install,
    plan_uninstall,
)
from supervisors._install import unit_exec_word

from .stand_ins import StandIns

TOKEN = "tok-$ecret \"q\" 'z' %n"
SETTINGS = {
    "RELAY_ORCHESTRATOR_RELAY_URL": "http://127.0.0.1:8080/relay%20x",
    "RELAY_ORCHESTRATOR_HEARTBEAT_INTERVAL": "5",
    "RELAY_ORCHESTRATOR_BASE_DIR": '/home/u/my "projects"',
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(m[1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key, []).append(value)
    return sections


def unquote_word(word: str) -> str:
    """systemd's reading of one quoted ExecStart/Environment word (the subset we write)."""
    if word.startswith('"'):
        assert word.endswith('"')
        body = word[1:-1]
        out, i = [], 0
        while i < len(body):
            if body[i] == "\\":
                nxt = body[i + 1]
                out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
                i += 2
            else:
                out.append(body[i])
                i += 1
        word = "".join(out)
    elif word == "\\;":
        word = ";"
    return word.replace("%%", "%")


def plan(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "exec_argv": ["/opt/venv/bin/relay-orchestrator"],
        "settings_env": SETTINGS,
        "token": TOKEN,
        "config_dir": tmp_path / "home/.config/relay-orchestrator",
        "home": tmp_path / "home",
        "runtime_root": None,
        "uid": 1000,
        "user": None,
    }
    args.update(kw)
    return plan_install("systemd", **args)  # type: ignore[arg-type]


def test_the_unit_file(tmp_path: Path) -> None:
    p = plan(tmp_path)
    token_file, unit = p.files
    assert unit.path == tmp_path / "home/.config/systemd/user/relay-orchestrator.service"
    assert unit.mode == 0o644
    parsed = parse_unit(unit.content)
    assert set(parsed) == {"Unit", "Service", "Install"}
    service = parsed["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["ExecStart"] == ["/opt/venv/bin/relay-orchestrator run"]
    assert service["Restart"] == ["on-failure"]
    assert 0 < int(service["RestartSec"][0]) <= 10
    assert service["KillMode"] == ["process"]
    assert service["TimeoutStopSec"] == ["10"]
    assert service["WatchdogSec"] == ["30"]
    assert service["EnvironmentFile"] == [str(token_file.path)]
    env = dict(unquote_word(v).split("=", 1) for v in service["Environment"])
    assert env == SETTINGS
    unit_section = parsed["Unit"]
    assert unit_section["StartLimitIntervalSec"] == ["60"]
    assert int(unit_section["StartLimitBurst"][0]) >= 5
    assert parsed["Install"]["WantedBy"] == ["default.target"]
    assert "$ecret" not in unit.content


def test_the_token_file(tmp_path: Path) -> None:
    token_file = plan(tmp_path).files[0]
    assert token_file.path == tmp_path / "home/.config/relay-orchestrator/token.env"
    assert token_file.mode == 0o600
    assert token_file.content == 'RELAY_ORCHESTRATOR_TOKEN="tok-\\$ecret \\"q\\" \'z\' %n"\n'
    assert TOKEN not in repr(token_file)


def test_no_token_no_environment_file(tmp_path: Path) -> None:
    p = plan(tmp_path, token=None)
    (unit,) = p.files
    assert "EnvironmentFile" not in parse_unit(unit.content)["Service"]


def test_runtime_prefix_entry(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    unit = plan(tmp_path, runtime_root=root).files[1]
    assert parse_unit(unit.content)["Service"]["ExecStart"] == [
        f"{root}/bin/relay-orchestrator run"
    ]


def test_exec_words_are_quoted_for_systemd(tmp_path: Path) -> None:
    argv = ["/opt/my venv/bin/python", "-m", "orchestrator", "a$b", "50%", ";", 'q"\\', ""]
    unit = plan(tmp_path, exec_argv=argv).files[1]
    line = parse_unit(unit.content)["Service"]["ExecStart"][0]
    assert line == ('"/opt/my venv/bin/python" -m orchestrator a$$b 50%% \\; "q\\"\\\\" "" run')
    assert unit_exec_word("plain-word_1.2/x") == "plain-word_1.2/x"
    assert unquote_word(unit_exec_word("tab\there")) == "tab\there"
    with pytest.raises(SupervisorConfigError, match="absolute path"):
        plan(tmp_path, exec_argv=["relay-orchestrator"])


def test_commands_and_dry_run(tmp_path: Path) -> None:
    p = plan(tmp_path)
    assert p.commands == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "relay-orchestrator.service"],
        ["systemctl", "--user", "restart", "relay-orchestrator.service"],
    ]
    shown = p.render_dry_run()
    assert "$ecret" not in shown
    assert "RELAY_ORCHESTRATOR_TOKEN=<token: hidden>" in shown
    for f in p.files:
        assert f"would write {f.path} (mode {f.mode:04o}):" in shown
    assert "would run: systemctl --user restart relay-orchestrator.service" in shown
    assert not (tmp_path / "home").exists()  # planning wrote nothing


def test_the_token_is_not_a_setting(tmp_path: Path) -> None:
    with pytest.raises(SupervisorConfigError, match="RELAY_ORCHESTRATOR_TOKEN"):
        plan(tmp_path, settings_env={"RELAY_ORCHESTRATOR_TOKEN": "x"})


def test_lingering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_install, "LINGER_DIR", tmp_path / "linger")
    note = linger_note("alice")
    assert note is not None and "loginctl enable-linger alice" in note
    p = plan(tmp_path, user="alice")
    assert p.commands[-1] == ["loginctl", "enable-linger", "alice"]
    (tmp_path / "linger").mkdir()
    (tmp_path / "linger" / "alice").touch()
    assert linger_note("alice") is None
    assert plan(tmp_path, user="alice").commands[-1][0] == "systemctl"


async def test_apply_and_uninstall(
    tmp_path: Path, stand_ins: StandIns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_install, "LINGER_DIR", tmp_path / "linger")
    stand_ins.add("systemctl")
    stand_ins.add("loginctl", stderr="Could not enable linger: Access denied\n", code=1)
    p = plan(tmp_path, user="alice")
    notes = await apply(p)
    assert len(notes) == 1 and "loginctl enable-linger alice" in notes[0]
    for f in p.files:
        assert f.path.read_text() == f.content
        assert f.path.stat().st_mode & 0o777 == f.mode
    assert stand_ins.argvs() == p.commands

    removed = plan_uninstall(
        "systemd", config_dir=tmp_path / "home/.config/relay-orchestrator",
        home=tmp_path / "home", uid=1000, purge_paths=[tmp_path / "state"],
    )  # fmt: skip
    (tmp_path / "state" / "agents").mkdir(parents=True)
    await apply(removed)
    assert not any(f.path.exists() for f in p.files)
    assert not (tmp_path / "state").exists()
    assert stand_ins.argvs()[len(p.commands) :] == [
        ["systemctl", "--user", "disable", "--now", "relay-orchestrator.service"],
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "reset-failed", "relay-orchestrator.service"],
    ]


async def test_a_failing_step_stops_the_plan(tmp_path: Path, stand_ins: StandIns) -> None:
    stand_ins.add("systemctl", stderr="Failed to connect to bus: No medium found\n", code=1)
    with pytest.raises(InstallError, match="daemon-reload.*No medium found"):
        await apply(plan(tmp_path))
    assert len(stand_ins.calls()) == 1


async def test_rewrite_keeps_modes(tmp_path: Path) -> None:
    target = tmp_path / "d" / "secret"
    for content in ("one", "two"):
        await apply(
            _install.InstallPlan(
                kind="systemd",
                unit="x",
                steps=(WriteFile(path=target, content=content, mode=0o600),),
            )
        )
    assert target.read_text() == "two"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secret"]
