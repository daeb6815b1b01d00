"""Installing a new version and restarting decoupled (PROTOCOL.md 5, steps 3–5).

1. the pending upgrade is journaled (command id, from, to, attempts);
2. install: runtime-prefix (a fresh venv ``versions/<V>``, pip from the
   configured index/find-links, verified by its entry point answering
   ``--version`` with V, then an atomic switch of ``current``), or the
   non-prefix ``relay-orchestrator upgrade --version V --no-restart``;
3. an outcome marker in the state dir says what happened;
4. the supervisor restarts us decoupled; this process then stops cleanly
   and leaves the command ``running`` for the relay to settle.

Any install failure settles the command ``failed`` at once with the
installer's last lines, and removes what the attempt created.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import trio

from supervisors import SupervisorError

from .._version import DISTRIBUTION
from ..daemon._dispatcher import Rejected
from ..relay._wire import Command, Outcome
from . import _runtime
from ._context import UpgradeContext
from ._request import PENDING_KEY, UpgradeRequest

if TYPE_CHECKING:
    from .._settings import Settings

log = logging.getLogger("relay_orchestrator.upgrade")

INSTALL_TIMEOUT = 600.0
LAST_HEARTBEAT_TIMEOUT = 1.0  # the restart does not wait longer for it
OUTCOME_MARKER = "upgrade-outcome.json"


class InstallFailed(Exception):
    pass


def last_lines(text: str, n: int = 5) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) if lines else "no output"


def pip_source_args(settings: Settings) -> list[str]:
    args: list[str] = []
    if settings.index_url:
        args += ["--index-url", settings.index_url]
    if settings.find_links:
        args += ["--find-links", settings.find_links]  # beside the index, not instead of it
    return args


async def _run(argv: list[str], *, what: str) -> str:
    log.info("%s: %s", what, " ".join(argv[:3]) + (" …" if len(argv) > 3 else ""))
    try:
        with trio.fail_after(INSTALL_TIMEOUT):
            proc = await trio.run_process(argv, capture_stdout=True, capture_stderr=True,
                                          check=False, stdin=None)
    except trio.TooSlowError as exc:
        raise InstallFailed(f"{what} took longer than {INSTALL_TIMEOUT:g} s") from exc
    except OSError as exc:
        raise InstallFailed(f"{what} failed: cannot run {argv[0]}: {exc}") from exc
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise InstallFailed(f"{what} failed (exit {proc.returncode}): {last_lines(out)}")
    return out


async def install_runtime_version(settings: Settings, root: Path, version: str,
                                  requirement: str | None = None) -> Path:
    """Create ``versions/<version>`` with pip; verified; ``current`` untouched."""
    target = _runtime.version_dir(root, version)
    if _runtime.current_target(root) == version and target.exists():
        # An equal version is a reinstall, in place (the environment is live).
        await _run(
            [str(target / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
             "-q", "--force-reinstall", "--no-deps", *pip_source_args(settings),
             requirement or f"{DISTRIBUTION}=={version}"],
            what=f"pip reinstall {DISTRIBUTION}=={version}",
        )
        return target
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        await create_venv(target)
        await _run(
            [str(target / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
             "-q", *pip_source_args(settings), requirement or f"{DISTRIBUTION}=={version}"],
            what=f"pip install {DISTRIBUTION}=={version}",
        )
        out = await _run([str(target / "bin" / "relay-orchestrator"), "--version"],
                         what="verify")
        if out.strip() != version:
            raise InstallFailed(f"verification failed: the installed entry point reports "
                                f"{out.strip()!r}, wanted {version}")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


async def create_venv(target: Path) -> None:
    """A fresh virtual environment at ``target``, with pip.

    pip comes from the running environment, linked in (or copied where links
    cannot be made): ``ensurepip`` would install and byte-compile it anew,
    the slowest part of an upgrade. Where the running environment has no pip
    of its own, ``venv`` installs one the usual way.
    """
    seed = running_pip()
    if seed is None:
        await _run([_runtime.venv_python(), "-m", "venv", str(target)], what="create venv")
        return
    await _run([_runtime.venv_python(), "-m", "venv", "--without-pip", str(target)],
               what="create venv")
    site = Path(sysconfig.get_path("purelib", scheme="venv",
                                   vars={"base": str(target), "platbase": str(target)}))
    try:
        for path in seed:
            await trio.to_thread.run_sync(_link_tree, path, site / path.name)
    except OSError as exc:
        raise InstallFailed(f"create venv failed: cannot add pip to {site}: {exc}") from exc


def running_pip() -> tuple[Path, Path] | None:
    """The running environment's ``pip`` package and its ``.dist-info``, if it has them."""
    from importlib import metadata  # only here: the daemon never loads it otherwise

    try:
        dist = metadata.distribution("pip")
    except metadata.PackageNotFoundError:
        return None
    package = Path(str(dist.locate_file("pip")))
    info = Path(str(dist.locate_file(f"pip-{dist.version}.dist-info")))
    if not (package / "__main__.py").is_file() or not (info / "METADATA").is_file():
        return None
    return package, info


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=_link_or_copy)


def write_outcome_marker(state_dir: Path, **fields: object) -> None:
    path = state_dir / OUTCOME_MARKER
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**fields, "at": int(time.time() * 1000)}))
    os.replace(tmp, path)


async def perform_upgrade(
    ctx: UpgradeContext, command: Command, request: UpgradeRequest
) -> Outcome | None:
    settings = ctx.settings
    target = request.target_version
    pending = {"commandId": command.id, "from": ctx.version, "to": target, "attempts": 1,
               "runtimeRoot": str(settings.runtime_root) if settings.runtime_root else None}
    ctx.journal.set_meta(PENDING_KEY, pending)
    root = settings.runtime_root
    switched_from: str | None = None  # the version `current` left, to go back to
    try:
        if root is not None:
            await install_runtime_version(settings, root, target)
            previous = _runtime.current_target(root) or ctx.version
            if previous != target:
                _runtime.mark_pending(root, previous)
                _runtime.switch_current(root, target)
                switched_from = previous
            _runtime.prune_versions(root, protect=[previous])
        else:
            await _non_prefix_install(settings, target)
    except InstallFailed as exc:
        _give_up(ctx, command, target, str(exc))
    write_outcome_marker(settings.state_dir, commandId=command.id, status="installed",
                         version=target)
    log.info("version %s installed; restarting through %s", target, ctx.host.name,
             extra={"commandId": command.id})
    # A last heartbeat: the relay hears from us until the moment we go, so the
    # time off the bus is the restart's, whatever the heartbeat interval.
    with trio.move_on_after(LAST_HEARTBEAT_TIMEOUT):
        await ctx.beat()
    try:
        await ctx.host.restart_self()
    except SupervisorError as exc:
        if root is not None and switched_from is not None:
            # Nothing restarted: `current` goes back, so that no later restart
            # starts the new version with nobody waiting for it.
            _runtime.switch_current(root, switched_from)
            _runtime.clear_pending(root)
        _give_up(ctx, command, target, f"could not restart to run {target}: {exc}")
    ctx.stop()
    return None


def _give_up(ctx: UpgradeContext, command: Command, target: str, reason: str) -> NoReturn:
    """The upgrade fails at once; this process carries on as it was."""
    ctx.journal.set_meta(PENDING_KEY, None)
    write_outcome_marker(ctx.settings.state_dir, commandId=command.id, status="failed",
                         reason=reason)
    log.error("upgrade to %s failed: %s", target, reason, extra={"commandId": command.id})
    raise Rejected(reason)


def _upgrade_command() -> str | None:
    """The project's own command line: on PATH, else beside the running interpreter."""
    beside = Path(sys.executable).parent / "relay-orchestrator"
    return shutil.which("relay-orchestrator") or (str(beside) if beside.exists() else None)


async def _non_prefix_install(settings: Settings, version: str) -> None:
    exe = _upgrade_command()
    if exe is None:
        raise InstallFailed("no upgrade command available: relay-orchestrator is not on PATH")
    await _run([exe, "upgrade", "--version", version, "--no-restart", *pip_source_args(settings)],
               what="relay-orchestrator upgrade")
