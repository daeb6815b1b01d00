"""Providers: the argv of an agent CLI, and what is typed into it.

Each provider turns a SpawnParams into argv (never through a shell), says
whether this host offers it, and shapes its input:

=========  ==========================================================
claude     ``claude [--session-id ID] [--model M] [--effort E]
           [--permission-mode P] <providerArgs> [--] [prompt]``
codex      ``codex --no-daemon [--model M] [-c model_reasoning_effort="E"]
           [approval/sandbox flags] <providerArgs> [--] [prompt]``
gemini     ``gemini [--model M] [--approval-mode A] [--skip-trust] <providerArgs>
           [--prompt-interactive=prompt]``
command    ``<command> <args> <providerArgs> [session args]`` (the built-in
           ``command`` runs ``providerArgs`` itself); no prompt
=========  ==========================================================

``providerModel`` wins over ``model``; ``permissionMode`` over
``approvalMode``. Compaction types ``compact_input`` as one line, waits for
the agent to be ready again, then types each memory file as ``@<path>``
followed by the file's content.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping

import attrs

from ._config import ProviderConfig
from ._params import CommandRejected, SpawnParams

# What each relay mode is in each CLI today (claude 2.1, codex 0.17x, gemini
# 0.6x; docs/providers/ has the reasons).
_CLAUDE_MODES = {
    "guarded": "default",
    "default": "default",
    "acceptEdits": "acceptEdits",
    "auto": "auto",
    "full-auto": "auto",
    "plan": "plan",
    "read-only": "plan",
    "dontAsk": "dontAsk",
    "bypassPermissions": "bypassPermissions",
    "yolo": "bypassPermissions",
}
_CODEX_MODES: dict[str, tuple[str, ...]] = {
    "guarded": ("--sandbox", "read-only", "--ask-for-approval", "on-request"),
    "default": (),
    "read-only": ("--sandbox", "read-only"),
    "plan": ("--sandbox", "read-only"),
    "acceptEdits": ("--sandbox", "workspace-write", "--ask-for-approval", "on-request"),
    "auto": ("--approve-for-me",),
    "full-auto": ("--sandbox", "workspace-write", "--ask-for-approval", "on-request"),
    "dontAsk": ("--ask-for-approval", "never"),
    "bypassPermissions": ("--dangerously-bypass-approvals-and-sandbox",),
    "yolo": ("--dangerously-bypass-approvals-and-sandbox",),
}
_GEMINI_MODES = {
    "guarded": "default",
    "default": "default",
    "read-only": "plan",
    "plan": "plan",
    "acceptEdits": "auto_edit",
    "auto": "auto_edit",
    "full-auto": "auto_edit",
    "dontAsk": "yolo",
    "bypassPermissions": "yolo",
    "yolo": "yolo",
}
_WORD = re.compile(r"^[A-Za-z0-9_.-]+$")


def _positional(prompt: str) -> list[str]:
    # A prompt that starts with "-" must not be read as an option.
    return ["--", prompt] if prompt.startswith("-") else [prompt]


@attrs.frozen
class Provider:
    """One provider as this host runs it."""

    config: ProviderConfig

    @property
    def name(self) -> str:
        return self.config.name

    def offered(self, path: str | None) -> bool:
        """On when enabled and (for a provider with a program) found on ``path``."""
        if not self.config.enabled:
            return False
        program = self.config.executable
        return program is None or shutil.which(program, path=path) is not None

    def argv(
        self,
        params: SpawnParams,
        *,
        session_id: str | None = None,
        resume: bool = False,
        trusted: bool = False,
    ) -> list[str]:
        """The agent's argv; ``resume`` continues provider session ``session_id``;
        ``trusted``: the folder may be trusted without asking (where the CLI
        has a flag for it)."""
        config = self.config
        argv = [*config.command, *config.args]
        session: list[str] = []
        if session_id is not None:
            template = config.resume_args if resume else config.session_id_args
            session = [
                arg.replace("{session_id}", session_id).replace("{sessionId}", session_id)
                for arg in template
            ]
        if config.kind != "command":
            argv += session
        model = params.provider_model or params.model
        mode = params.mode
        prompt = None if resume else params.prompt
        if config.kind == "claude":
            if model:
                argv += ["--model", model]
            if params.effort:
                argv += ["--effort", params.effort]
            if mode:
                argv += ["--permission-mode", _CLAUDE_MODES[mode]]
            argv += params.provider_args
            if prompt:
                argv += _positional(prompt)
        elif config.kind == "codex":
            # No shared background server: the agent is one process tree,
            # which ends with it.
            argv.append("--no-daemon")
            if model:
                argv += ["--model", model]
            if params.effort and _WORD.match(params.effort):
                argv += ["-c", f'model_reasoning_effort="{params.effort}"']
            if mode:
                argv += _CODEX_MODES[mode]
            argv += params.provider_args
            if prompt:
                argv += _positional(prompt)
        elif config.kind == "gemini":
            if model:
                argv += ["--model", model]
            if mode:
                argv += ["--approval-mode", _GEMINI_MODES[mode]]
            if trusted:
                argv.append("--skip-trust")
            argv += params.provider_args
            if prompt:
                argv.append(f"--prompt-interactive={prompt}")
        else:  # the program may come from providerArgs: session args go last
            argv += [*params.provider_args, *session]
        if not argv or not argv[0]:
            raise CommandRejected(
                f"invalid params.providerArgs: provider {self.name} runs providerArgs, "
                "so providerArgs[0] must name the program"
            )
        return argv

    def supports_sessions(self) -> bool:
        return bool(self.config.session_id_args)


def find_program(program: str, *, cwd: str, env: Mapping[str, str]) -> str | None:
    """Where ``program`` is for an agent in ``cwd`` with ``env``, or None."""
    if "/" in program:
        path = os.path.join(cwd, program)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    search = env.get("PATH", os.defpath)
    found = _found.get((program, search))
    if found is None:
        found = shutil.which(program, path=search)
        if found is not None:
            if len(_found) > 256:
                _found.clear()
            _found[(program, search)] = found
    return found


# Programs found on PATH before (a spawn is a hot path; a program removed
# since then fails its start, which says so).
_found: dict[tuple[str, str], str] = {}


def reload_input(path: str, content: str) -> str:
    """What reloads one memory file: a line ``@<path>``, then the content."""
    if content.endswith("\n"):
        content = content[:-1]
    return f"@{path}\n{content}" if content else f"@{path}"
