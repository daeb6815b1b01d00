"""The runtime-prefix layout (INTERFACE.md) and its rollback guard.

    <root>/versions/<version>/        one virtual environment per installed version
    <root>/current -> versions/<v>    switched atomically (symlink + rename)
    <root>/bin/relay-orchestrator     stable entry the unit runs (follows current)
    <root>/upgrade-pending            present while an upgrade has not proven itself

The stable entry is a small POSIX ``sh`` script, so that it runs even when
the new version's Python code cannot. While ``upgrade-pending`` names a
previous version it counts starts: the first start of a new version runs at
once (nothing added to the restart); a later one, since the first did not
register, first checks that the new version imports what ``run`` needs
(``IMPORT_CHECK``). An import failure, or a third start, switches
``current`` back to the previous version and writes the reason to
``rollback-reason`` before exec-ing it: the process that then comes up reads
that reason and settles the upgrade ``failed`` itself. The unit's start
limit allows more starts than that.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Collection
from pathlib import Path

ENTRY_NAME = "relay-orchestrator"
PENDING = "upgrade-pending"
ROLLBACK_REASON = "rollback-reason"
KEEP_VERSIONS = 3
MAX_STARTS = 3
# What a new version must import before the stable entry runs it: the command
# line and everything ``run`` imports (the app imports actors and supervisors).
IMPORT_CHECK = "import orchestrator.cli._main, orchestrator.daemon._app, orchestrator._logging"

STABLE_ENTRY = f"""#!/bin/sh
# relay-orchestrator stable entry: runs <root>/current, rolls back a new
# version that cannot start (written by relay-orchestrator; do not edit).
root="$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)"
pending="$root/{PENDING}"
if [ -f "$pending" ]; then
    previous="$(sed -n 1p "$pending")"
    starts="$(sed -n 2p "$pending")"
    starts=$(( ${{starts:-0}} + 1 ))
    printf '%s\\n%s\\n' "$previous" "$starts" > "$pending.tmp" && mv -f "$pending.tmp" "$pending"
    reason=""
    if [ "$starts" -gt 1 ] && ! err="$("$root/current/bin/python" -c '{IMPORT_CHECK}' 2>&1)"; then
        reason="new version failed to start: $(printf '%s' "$err" | tail -n 3 | tr '\\n' ' ')"
    elif [ "$starts" -ge {MAX_STARTS} ]; then
        reason="new version did not come up after $(( starts - 1 )) starts"
    fi
    if [ -n "$reason" ] && [ -n "$previous" ] && [ -d "$root/versions/$previous" ]; then
        ln -sfn "versions/$previous" "$root/current.tmp" \\
            && mv -Tf "$root/current.tmp" "$root/current"
        printf '%s\\n' "$reason" > "$root/{ROLLBACK_REASON}"
        rm -f "$pending"
        echo "relay-orchestrator: $reason; rolled back to $previous" >&2
    fi
fi
exec "$root/current/bin/relay-orchestrator" "$@"
"""


def version_dir(root: Path, version: str) -> Path:
    return root / "versions" / version


def current_target(root: Path) -> str | None:
    try:
        return Path(os.readlink(root / "current")).name
    except OSError:
        return None


def write_stable_entry(root: Path) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    entry = bin_dir / ENTRY_NAME
    tmp = entry.with_suffix(".tmp")
    tmp.write_text(STABLE_ENTRY)
    tmp.chmod(0o755)
    os.replace(tmp, entry)
    return entry


def switch_current(root: Path, version: str) -> None:
    """Point ``current`` at ``versions/<version>`` in one rename."""
    tmp = root / "current.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path("versions") / version)
    os.replace(tmp, root / "current")


def mark_pending(root: Path, previous: str) -> None:
    path = root / PENDING
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{previous}\n0\n")
    os.replace(tmp, path)
    (root / ROLLBACK_REASON).unlink(missing_ok=True)


def clear_pending(root: Path) -> None:
    (root / PENDING).unlink(missing_ok=True)


def take_rollback_reason(root: Path) -> str | None:
    path = root / ROLLBACK_REASON
    try:
        reason = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    path.unlink(missing_ok=True)
    return reason or None


def prune_versions(root: Path, keep: int = KEEP_VERSIONS, *,
                   protect: Collection[str] = ()) -> list[str]:
    """Remove all but the newest ``keep`` versions.

    Never the current one, nor those in ``protect`` (the version an upgrade
    in flight would roll back to).
    """
    versions = root / "versions"
    kept = {current_target(root), *protect}
    entries = sorted(
        (p for p in versions.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    removed = []
    for path in entries[keep:]:
        if path.name not in kept:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def venv_python() -> str:
    """The interpreter new environments are made from (never a venv's own copy)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return str(base)
