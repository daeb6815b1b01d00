"""Shell completion written from the parser, and a one-line help for every command.

bash runs the script and its completion function as bash calls it
(``COMP_WORDS``/``COMP_CWORD``); fish answers ``complete -C`` with the
script loaded, as it does at a prompt; zsh checks the script's syntax and
runs its function with zsh's completion builtins (``compadd``,
``_describe``, ``_files``) standing in, since they only exist inside a
completion widget.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli._completion import command_tree
from orchestrator.cli._main import build_parser

from ..conftest import cli_env
from ..supervisors.systemd_sandbox_support import unavailable

WAIT = 60.0


def script(shell: str, tmp_path: Path) -> Path:
    out = subprocess.run([sys.executable, "-m", "orchestrator", "completion", shell],
                         capture_output=True, text=True, timeout=WAIT, env=cli_env(),
                         check=True)
    path = tmp_path / f"relay-orchestrator.{shell}"
    path.write_text(out.stdout)
    return path


def shell_or_skip(name: str) -> str:
    """The shell, or a skip; under CI (``CI=true``, which installs them) a failure."""
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed (.ci/run installs it)")
    assert found is not None
    return found


def test_every_command_says_what_it_does_in_one_line() -> None:
    commands = list(command_tree(build_parser()).walk())[1:]
    assert {c.key for c in commands} >= {
        "run", "dev", "relay", "status", "upgrade", "ctl", "ctl spawn", "ctl stop",
        "ctl restart", "ctl compact", "ctl upgrade", "ctl agents", "ctl commands", "install",
        "uninstall", "logs", "attach", "doctor", "completion"}
    for command in commands:
        assert command.help.strip(), f"{command.key}: no help"
        assert "\n" not in command.help and len(command.help) <= 80, command.key

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    sub = action.choices[choice.dest]
                    assert choice.help and "\n" not in choice.help, choice.dest
                    assert sub.description == choice.help  # its own --help opens with it
                    walk(sub)

    walk(build_parser())
    out = subprocess.run([sys.executable, "-m", "orchestrator", "doctor", "--help"],
                         capture_output=True, text=True, timeout=WAIT, env=cli_env())
    assert "check this host" in out.stdout.split("\n\n")[1]


BASH_CASES = [
    (["ct"], ["ctl"]),
    (["ctl", "sp"], ["spawn"]),
    (["doctor", "--j"], ["--json"]),
    (["attach", "ag_1", "--read"], ["--read-only"]),
    (["ctl", "spawn", "orch-1", "--workspace-mode", ""], ["shared", "isolated", "inherit"]),
    (["ctl", "upgrade", "--version", "1.0", "orch-1", "--fo"], ["--force"]),
    (["upgrade", "--version", "--no"], []),  # a value, not an option, follows --version
    (["completion", ""], ["bash", "zsh", "fish"]),
]


def test_bash_completes_commands_subcommands_flags_and_choices(tmp_path: Path) -> None:
    bash = shell_or_skip("bash")
    path = script("bash", tmp_path)
    lines = [f"source {path}", "complete -p relay-orchestrator"]
    for typed, _ in BASH_CASES:
        words = " ".join(f"'{w}'" for w in ["relay-orchestrator", *typed])
        lines += [f"COMP_WORDS=({words}); COMP_CWORD={len(typed)}", "_relay_orchestrator",
                  'echo "[${COMPREPLY[*]}]"']
    out = subprocess.run([bash, "--norc", "--noprofile", "-c", "\n".join(lines)],
                         capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    registered, *replies = out.stdout.splitlines()
    assert registered == "complete -o default -F _relay_orchestrator relay-orchestrator"
    assert replies == [f"[{' '.join(want)}]" for _, want in BASH_CASES]


def test_fish_completes_as_at_its_prompt(tmp_path: Path) -> None:
    fish = shell_or_skip("fish")
    path = script("fish", tmp_path)
    assert subprocess.run([fish, "--no-execute", str(path)], timeout=WAIT).returncode == 0
    typed = ["relay-orchestrator ct", "relay-orchestrator ctl sp", "relay-orchestrator doctor --j",
             "relay-orchestrator ctl spawn o --workspace-mode ", "relay-orchestrator completion ",
             "relay-orchestrator ctl upgrade --version 1.0 o --fo"]
    code = "; ".join([f"source {path}"] + [f"complete -C '{t}'; echo ---" for t in typed])
    out = subprocess.run([fish, "--no-config", "-c", code], capture_output=True, text=True,
                         timeout=WAIT, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    answers = [[line.split("\t")[0] for line in block.strip().splitlines()]
               for block in out.stdout.split("---\n")[:-1]]
    assert answers == [["ctl"], ["spawn"], ["--json"], ["inherit", "isolated", "shared"],
                       ["bash", "fish", "zsh"], ["--force"]]


def test_zsh_script_parses_registers_and_offers_the_same(tmp_path: Path) -> None:
    zsh = shell_or_skip("zsh")
    path = script("zsh", tmp_path)
    assert subprocess.run([zsh, "-n", str(path)], timeout=WAIT).returncode == 0
    code = "\n".join([
        'compdef() { print -r -- "compdef $*" }',
        f"source {path}",
        'compadd() { shift; print -r -- "compadd ${(P)1}" }',
        '_describe() { print -r -- "describe ${(P)${@[-1]}}" }',
        "_files() { print files }",
        't() { words=("$@"); CURRENT=$#words; _relay_orchestrator }',
        "t relay-orchestrator ''",
        "t relay-orchestrator ctl spawn o --workspace-mode ''",
        "t relay-orchestrator doctor --j",
        "t relay-orchestrator completion ''",
        "t relay-orchestrator logs --state-dir ''",
    ])
    out = subprocess.run([zsh, "-f", "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "compdef _relay_orchestrator relay-orchestrator"
    assert lines[1].startswith("describe run:run the orchestrator in the foreground ")
    assert "doctor:check this host" in lines[1] and "attach:attach this terminal" in lines[1]
    assert lines[2] == "compadd shared isolated inherit"
    assert lines[3].startswith("describe -h:") and " --json:print the checks" in lines[3]
    assert lines[4:] == ["compadd bash zsh fish", "files"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_script_names_every_command(tmp_path: Path, shell: str) -> None:
    text = script(shell, tmp_path).read_text()
    for command in list(command_tree(build_parser()).walk())[1:]:
        assert command.path[-1] in text, (shell, command.key)
        for option in command.options:
            for flag in option.flags:
                name = flag.lstrip("-") if shell == "fish" else flag
                assert name in text, (shell, command.key, flag)
