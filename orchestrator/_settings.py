"""Settings: flag, then environment, then the TOML file, then the default.

Each setting has a flag on ``run``, an environment variable and a top-level
key in the config file (the flag's name without dashes, ``-`` as ``_``).
Tables such as ``[providers.command]`` configure providers. The relay token
never comes from the config file or a flag's value: only ``--token-file``
(a file only its owner can read) or ``RELAY_ORCHESTRATOR_TOKEN``.

Values are read with the shared field reader (``actors``' ``FieldError`` and
``CONFIG_READER``, the words of provider tables); a bad one stops ``run``
with ``<flag, variable or file key>: invalid value <value>: <reason>``.
"""

from __future__ import annotations

import argparse
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from actors import CONFIG_READER, FieldError

from ._errors import ConfigError

ENV_PREFIX = "RELAY_ORCHESTRATOR_"
TOKEN_ENV = "RELAY_ORCHESTRATOR_TOKEN"
SUPERVISOR_CHOICES = ("auto", "systemd", "launchd", "none")
LOG_FORMATS = ("text", "json")


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_config_path() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "relay-orchestrator" / "config.toml"


def default_state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "relay-orchestrator"


# Each reader takes the value's name (flag, variable or file key) and the raw
# value: text from a flag or the environment, any TOML value from the file.


def _seconds(field: str, raw: object) -> float:
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            raise FieldError(field, "expected a number of seconds") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise FieldError(field, "expected a number of seconds")
    if not raw > 0 or raw == float("inf"):
        raise FieldError(field, "expected a positive number of seconds")
    return float(raw)


def _path(field: str, raw: object) -> Path:
    if not isinstance(raw, str | Path) or not str(raw):
        raise FieldError(field, "expected a path")
    return Path(os.path.expanduser(str(raw)))


def _text(field: str, raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise FieldError(field, "expected a non-empty string")
    return raw


def _url(field: str, raw: object) -> str:
    text = _text(field, raw)
    if not text.startswith(("http://", "https://")):
        raise FieldError(field, "expected an http:// or https:// URL")
    return text.rstrip("/")


def _choice(*choices: str) -> Callable[[str, object], str]:
    return lambda field, raw: CONFIG_READER.choice(field, raw, choices)


def _orch_id(field: str, raw: object) -> str:
    text = _text(field, raw)
    if len(text) > 200 or any(c.isspace() or c == "/" for c in text):
        raise FieldError(field, "expected an id without spaces or '/', at most 200 characters")
    return text


def _count(minimum: int, maximum: int) -> Callable[[str, object], int]:
    """A whole number from ``minimum`` to ``maximum`` (text from a flag or variable)."""

    def parse(field: str, raw: object) -> int:
        if isinstance(raw, str):
            try:
                raw = int(raw)
            except ValueError:
                raise FieldError(field, CONFIG_READER.expect_integer) from None
        return CONFIG_READER.integer(field, raw, minimum=minimum, maximum=maximum)

    return parse


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(field: str, raw: object) -> bool:
    if isinstance(raw, str) and raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    return CONFIG_READER.boolean(field, raw)


@attrs.frozen
class _Spec:
    name: str  # attribute and file key
    parse: Callable[[str, object], Any]  # (where the value came from, the value)
    help: str
    flag_type: str = "value"  # or "switch"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SPECS: tuple[_Spec, ...] = (
    _Spec("relay_url", _url, "relay base URL, e.g. http://127.0.0.1:8080"),
    _Spec("token_file", _path, "file holding the relay token (mode 0600)"),
    _Spec("ca_file", _path, "CA certificates (PEM) to verify an https:// relay with"),
    _Spec("id", _orch_id, "orchestrator id (default: generated once, kept in the state dir)"),
    _Spec("base_dir", _path, "agents' working directories must lie within it (default: home)"),
    _Spec("state_dir", _path, "durable state (default: $XDG_STATE_HOME/relay-orchestrator)"),
    _Spec("heartbeat_interval", _seconds, "seconds between heartbeats (default 10)"),
    _Spec("supervisor", _choice(*SUPERVISOR_CHOICES), "auto, systemd, launchd or none"),
    _Spec("self_unit", _text, "systemd unit or launchd label that supervises this process"),
    _Spec("runtime_root", _path, "runtime-prefix install root (versions/, current, bin/)"),
    _Spec("find_links", _text, "extra place for pip to look for wheels during upgrades"),
    _Spec("index_url", _text, "package index for upgrades"),
    _Spec("log_format", _choice(*LOG_FORMATS), "text or json (default: text on a terminal)"),
    _Spec("log_max_bytes", _count(4096, 2**40),
          "the orchestrator's log file is rotated past this size (default 10000000)"),
    _Spec("log_backups", _count(0, 100), "rotated log files kept (default 3)"),
    _Spec("stop_agents_on_exit", _bool, "stop every agent when the orchestrator exits", "switch"),
)
_BY_NAME = {s.name: s for s in SPECS}
FILE_TABLES = ("providers",)


@attrs.frozen(kw_only=True)
class Settings:
    relay_url: str | None
    token_file: Path | None
    token_env: str | None = attrs.field(repr=False)
    ca_file: Path | None = None
    id: str | None
    base_dir: Path
    state_dir: Path
    heartbeat_interval: float
    supervisor: str
    self_unit: str | None
    runtime_root: Path | None
    find_links: str | None
    index_url: str | None
    log_format: str
    stop_agents_on_exit: bool
    providers: Mapping[str, Mapping[str, Any]]
    config_path: Path | None
    # The orchestrator's own log file (launchd, foreground), as an agent's output log.
    log_max_bytes: int = 10_000_000
    log_backups: int = 3
    # Where each value came from (flag/env/file/default), for `status` and tests.
    sources: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)

    def read_token(self) -> str | None:
        """The token, read afresh (fixing the file heals a 401 without a restart)."""
        if self.token_file is not None:
            return read_token_file(self.token_file)
        return self.token_env

    def as_env(self) -> dict[str, str]:
        """The non-secret settings as environment variables (for unit files)."""
        out: dict[str, str] = {}
        for spec in SPECS:
            if self.sources.get(spec.name) in (None, "default"):
                continue
            value = getattr(self, spec.name)
            if value is None:
                continue
            if isinstance(value, bool):
                out[spec.env] = "true" if value else "false"
            else:
                out[spec.env] = str(value)
        return out


def read_token_file(path: Path, what: str = "--token-file") -> str:
    """The token the file holds (its text, stripped); ConfigError naming ``what``
    and the file as ``read_secret_file`` does, or when it holds a character a
    header cannot carry."""
    return check_token(read_secret_file(path, what), f"{what} {path}")


def read_secret_file(path: Path, what: str) -> str:
    """The file's text, stripped; ConfigError naming ``what`` and the file when
    it cannot be read, is open to group or others, or is empty."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not UTF-8 text") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what} {path}: readable by group or others; fix with: chmod 600 {path}"
        )
    token = text.strip()
    if not token:
        raise ConfigError(f"{what} {path}: file is empty")
    return token


def check_token(token: str, where: str) -> str:
    """A bearer token goes into an HTTP header: visible ASCII only (RFC 6750's
    characters and more; never a space, a control character or non-ASCII)."""
    for char in token:
        if not "!" <= char <= "~":
            shown = repr(char) if char.isprintable() and char != " " else f"U+{ord(char):04X}"
            raise ConfigError(
                f"{where}: the token holds {shown}, which cannot go in an HTTP header "
                f"(a token is visible ASCII: letters, digits, -._~+/=)")
    return token


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (flag > environment > config file > default)")
    group.add_argument("--config", dest="config", default=None, help="TOML config file")
    for spec in SPECS:
        if spec.flag_type == "switch":
            group.add_argument(spec.flag, dest=spec.name, action="store_const", const=True,
                               default=None, help=spec.help + f" [{spec.env}]")
        else:
            group.add_argument(spec.flag, dest=spec.name, default=None,
                               help=spec.help + f" [{spec.env}]")


def _load_file(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        if explicit:
            raise ConfigError(f"--config {path}: no such file") from exc
        return {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from exc
    for key, value in data.items():
        if key in FILE_TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: [{key}] must be a table")
            continue
        if key in ("token", "relay_token"):
            raise ConfigError(
                f"config file {path}: key {key!r} not allowed; the token goes in token_file "
                f"or {TOKEN_ENV}"
            )
        if key not in _BY_NAME:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
    return data


def load_settings(
    flags: Mapping[str, Any] | argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    check_files: bool = True,
) -> Settings:
    """Resolve every setting; raises ConfigError naming the option or file.

    ``check_files=False`` leaves the token and CA files unread (``doctor``
    reports on them itself)."""
    if isinstance(flags, argparse.Namespace):
        flags = vars(flags)
    flags = dict(flags or {})
    environ = os.environ if environ is None else environ
    config_flag = flags.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    config_path = _path("--config", config_flag) if config_flag else default_config_path()
    file_data = _load_file(config_path, explicit=bool(config_flag))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in SPECS:
        for source, raw, where in (
            ("flag", flags.get(spec.name), spec.flag),
            ("env", environ.get(spec.env) or None, spec.env),
            ("file", file_data.get(spec.name), f"{spec.name} in {config_path}"),
        ):
            if raw is None:
                continue
            try:
                values[spec.name] = spec.parse(where, raw)
            except FieldError as exc:
                raise ConfigError(f"{where}: invalid value {raw!r}: {exc.reason}") from exc
            sources[spec.name] = source
            break
        else:
            sources[spec.name] = "default"

    token_env = environ.get(TOKEN_ENV) or None
    settings = Settings(
        relay_url=values.get("relay_url"),
        token_file=values.get("token_file"),
        token_env=check_token(token_env.strip(), TOKEN_ENV) if token_env else None,
        ca_file=values.get("ca_file"),
        id=values.get("id"),
        base_dir=values.get("base_dir", Path.home()),
        state_dir=values.get("state_dir") or default_state_dir(),
        heartbeat_interval=values.get("heartbeat_interval", 10.0),
        supervisor=values.get("supervisor", "auto"),
        self_unit=values.get("self_unit"),
        runtime_root=values.get("runtime_root"),
        find_links=values.get("find_links"),
        index_url=values.get("index_url"),
        log_format=values.get("log_format") or ("text" if _isatty() else "json"),
        stop_agents_on_exit=values.get("stop_agents_on_exit", False),
        log_max_bytes=values.get("log_max_bytes", 10_000_000),
        log_backups=values.get("log_backups", 3),
        providers=file_data.get("providers", {}),
        config_path=config_path if config_path.exists() else None,
        sources=sources,
    )
    if not check_files:
        return settings
    if settings.token_file is not None:
        read_token_file(settings.token_file)  # fail now, with the fix in the message
    if settings.ca_file is not None and not settings.ca_file.is_file():
        raise ConfigError(f"--ca-file {settings.ca_file}: no such file")
    return settings


def _isatty() -> bool:
    try:
        return os.isatty(2)
    except OSError:
        return False
