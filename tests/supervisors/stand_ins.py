"""Stand-ins for ``systemctl``, ``systemd-run``, ``launchctl``, ``loginctl``.

Each is a small script put first on PATH that appends one JSON line per
call to a record file: its argv (argv[0] as the bare name), its session id,
and, for an ``EnvironmentFile=`` argument, that file's mode and content as
they were during the call.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

_SCRIPT = """#!{python}
import json, os, sys
rec = {{"argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]]}}
rec.update(sid=os.getsid(0), pid=os.getpid())
for arg in sys.argv[1:]:
    if arg.startswith("EnvironmentFile="):
        path = arg.split("=", 1)[1]
        rec["env_file"] = {{"mode": os.stat(path).st_mode & 0o777, "content": open(path).read()}}
with open({record!r}, "a") as f:
    f.write(json.dumps(rec) + "\\n")
sys.stdout.write({stdout!r})
sys.stderr.write({stderr!r})
sys.exit({code})
"""


class StandIns:
    def __init__(self, bin_dir: Path, record: Path) -> None:
        self.bin_dir = bin_dir
        self.record = record

    def add(self, name: str, *, stdout: str = "", stderr: str = "", code: int = 0) -> Path:
        path = self.bin_dir / name
        path.write_text(
            _SCRIPT.format(
                python=sys.executable, record=str(self.record), stdout=stdout, stderr=stderr,
                code=code,
            )
        )  # fmt: skip
        path.chmod(0o755)
        return path

    def calls(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    @classmethod
    def first_on_path(cls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIns:
        """An empty set of stand-ins whose directory comes first on PATH for the test."""
        bin_dir = tmp_path / "stand-in-bin"
        bin_dir.mkdir()
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
        return cls(bin_dir, tmp_path / "calls.jsonl")

    def argvs(self) -> list[list[str]]:
        return [call["argv"] for call in self.calls()]
