"""What an installed service runs with, read back from the files on disk.

``find_installed`` looks for what ``install`` wrote (or a person edited
since) and reads the program and environment the supervisor will give the
orchestrator, without asking the supervisor (which may not run):

- systemd: the user unit ``relay-orchestrator.service`` and its drop-ins
  (``relay-orchestrator.service.d/*.conf``, what ``systemctl --user edit``
  writes), in that order: ``ExecStart=``, ``Environment=`` and
  ``EnvironmentFile=`` of ``[Service]``. The user manager's own environment
  lies under it (``systemctl --user show-environment``, the caller's to ask;
  ``SYSTEMD_DEFAULT_PATH`` when it cannot be asked).
- launchd: the plist's ``ProgramArguments`` and ``EnvironmentVariables``;
  launchd's own PATH (``LAUNCHD_DEFAULT_PATH``) when the plist sets none.

The syntax read is systemd's: words in double quotes with C escapes or in
single quotes, ``%%`` for ``%`` (``%h`` and ``%u`` expanded), and
``EnvironmentFile=`` lines ``KEY=value`` (``parse_env_file``, the inverse of
``format_env_file``).
"""

from __future__ import annotations

import os
import plistlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs

from ._install import SYSTEMD_UNIT
from ._launchd import DEFAULT_LABEL, plist_path

# What the user manager gives a unit when nothing sets PATH (systemd's default).
SYSTEMD_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What launchd gives a job whose plist sets no PATH.
LAUNCHD_DEFAULT_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_C_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
              "\\": "\\", '"': '"', "'": "'", "s": " "}  # fmt: skip


@attrs.frozen(kw_only=True)
class InstalledService:
    kind: Literal["systemd", "launchd"]
    path: Path  # the unit file or the plist
    exec_argv: tuple[str, ...]
    # What the unit or plist sets (token file values included: keep it private).
    environment: Mapping[str, str] = attrs.field(repr=False)
    # The files that set it, in the order read (drop-ins, environment files).
    sources: tuple[Path, ...] = ()


def systemd_unit_path(home: Path, xdg_config_home: Path | None = None) -> Path:
    return (xdg_config_home or home / ".config") / "systemd" / "user" / SYSTEMD_UNIT


def find_installed(
    *, home: Path, xdg_config_home: Path | None = None, user: str = "",
    label: str = DEFAULT_LABEL,
) -> InstalledService | None:
    """The service installed for this user (systemd unit first, then plist), or None."""
    unit = systemd_unit_path(home, xdg_config_home)
    if unit.exists():
        return read_systemd_unit(unit, home=home, user=user)
    plist = plist_path(home, label)
    if plist.exists():
        return read_launchd_plist(plist)
    return None


# -- systemd --------------------------------------------------------------------


def read_systemd_unit(unit: Path, *, home: Path, user: str = "") -> InstalledService:
    """ExecStart and environment of ``unit`` and its drop-ins; unreadable parts skipped."""
    drop_in_dir = unit.with_name(unit.name + ".d")
    try:
        drop_ins = sorted(p for p in drop_in_dir.iterdir() if p.suffix == ".conf")
    except OSError:
        drop_ins = []
    exec_argv: tuple[str, ...] = ()
    environment: dict[str, str] = {}
    env_files: list[tuple[Path, bool]] = []
    read: list[Path] = []
    for path in (unit, *drop_ins):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        read.append(path)
        for key, value in _service_directives(text):
            value = _specifiers(value, home=home, user=user)
            if key == "ExecStart":
                words = split_unit_words(value)
                if words:
                    words[0] = words[0].lstrip("-@+!:")
                    exec_argv = tuple(words)
            elif key == "Environment":
                if not value.strip():
                    environment.clear()  # an empty assignment resets the list
                for word in split_unit_words(value):
                    name, sep, setting = word.partition("=")
                    if sep and _ENV_NAME.match(name):
                        environment[name] = setting
            elif key == "EnvironmentFile":
                if not value.strip():
                    env_files.clear()
                else:
                    optional = value.startswith("-")
                    env_files.append((Path(value.lstrip("-").strip()), optional))
    # systemd applies the files after the Environment= lines, in order.
    for path, _optional in env_files:
        try:
            environment.update(parse_env_file(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
        read.append(path)
    return InstalledService(kind="systemd", path=unit, exec_argv=exec_argv,
                            environment=environment, sources=tuple(read))


def _service_directives(text: str) -> list[tuple[str, str]]:
    """``(key, value)`` of the ``[Service]`` section, continuation lines joined."""
    out: list[tuple[str, str]] = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line[:1] in ("#", ";"):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep and section == "Service":
            out.append((key.strip(), value.strip()))
    return out


def _specifiers(value: str, *, home: Path, user: str) -> str:
    known = {"%": "%", "h": str(home), "u": user, "U": str(os.getuid())}
    return re.sub(r"%(.)", lambda m: known.get(m.group(1), m.group(0)), value)


def split_unit_words(text: str) -> list[str]:
    """Words as systemd splits ``ExecStart=`` and ``Environment=`` values."""
    words: list[str] = []
    word: list[str] = []
    started = False
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            char, i = _escape(text, i + 1)
            word.append(char)
            started = True
            continue
        if quote:
            if c == quote:
                quote = ""
            else:
                word.append(c)
        elif c in " \t":
            if started:
                words.append("".join(word))
                word, started = [], False
        elif c in "\"'":
            quote, started = c, True
        else:
            word.append(c)
            started = True
        i += 1
    if started:
        words.append("".join(word))
    return words


def _escape(text: str, i: int) -> tuple[str, int]:
    """The character an escape at ``text[i]`` (after the backslash) stands for; next index."""
    c = text[i]
    if c == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 1 : i + 3]):
        return chr(int(text[i + 1 : i + 3], 16)), i + 3
    return _C_ESCAPES.get(c, c), i + 1


def parse_env_file(text: str) -> dict[str, str]:
    """The variables of an ``EnvironmentFile=``: ``KEY=value`` lines, ``#``/``;``
    comments, values bare or in double quotes (``\\`` escapes) or single quotes."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        while line.endswith("\\") and i < len(lines):  # a bare value continued
            line = line[:-1] + lines[i].strip()
            i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _ENV_NAME.match(name):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[name] = value
    return out


# -- launchd --------------------------------------------------------------------


def read_launchd_plist(plist: Path) -> InstalledService:
    try:
        with plist.open("rb") as fh:
            data = plistlib.load(fh)
    except (OSError, plistlib.InvalidFileException, ValueError):
        data = {}
    argv = data.get("ProgramArguments") if isinstance(data, dict) else None
    env = data.get("EnvironmentVariables") if isinstance(data, dict) else None
    return InstalledService(
        kind="launchd",
        path=plist,
        exec_argv=tuple(str(a) for a in argv) if isinstance(argv, list) else (),
        environment={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
        sources=(plist,),
    )
