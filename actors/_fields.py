"""One way to read input: typed values, each failure a sentence naming its field.

Every input is read with these checks: command params (``_params.py``),
provider tables (``_config.py``) and, through this package's exports, the
upgrade's params (``orchestrator/upgrade/_request.py``) and the settings
(``orchestrator/_settings.py``). They live here because ``actors`` is the
lowest package both this package and ``orchestrator`` may import.

A check returns the value, typed, or raises ``FieldError``: ``field`` names
the value (``params.tags[1]``, ``log_backups``), ``reason`` says what is wrong
with it, and ``str()`` is ``"<field>: <reason>"``. Each entry point frames it
once, in its own sentence: a command fails with ``invalid params.timeoutMs:
expected integer`` (PROTOCOL.md 3.5), a provider table is refused with
``log_backups: must be between 0 and 100``, a setting with ``--supervisor:
invalid value 'runit': must be one of …``. Checks that belong to one input
alone (an agent id, a systemd limit, a URL) raise ``FieldError`` too.

Commands and config files are read in different words: the protocol's
(``expected integer``) and plain English (``expected an integer``), one
``FieldReader`` each. ``Fields`` reads one JSON object's fields, where
``null`` counts as absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

MAX_TEXT = 4096  # ids, names, labels, models
MAX_ITEMS = 256


class FieldError(ValueError):
    """A bad value: ``field`` names it, ``reason`` says why; ``str()`` is both."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@attrs.frozen(kw_only=True)
class FieldReader:
    """Checks of one value each; its attributes are the words of their reasons."""

    expect_string: str
    expect_integer: str
    expect_number: str
    expect_boolean: str
    expect_strings: str
    expect_object: str
    expect_one_of: str

    def text(self, field: str, value: object, *, limit: int | None = None) -> str:
        if not isinstance(value, str):
            raise FieldError(field, self.expect_string)
        if limit is not None and len(value) > limit:
            raise FieldError(field, f"longer than {limit} characters")
        if "\0" in value:
            raise FieldError(field, "must not contain NUL")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise FieldError(field, "is not valid text") from None
        return value

    def integer(self, field: str, value: object, *, minimum: int, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(field, self.expect_integer)
        if not minimum <= value <= maximum:
            raise FieldError(field, f"must be between {minimum} and {maximum}")
        return value

    def number(self, field: str, value: object, *, minimum: float, maximum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(field, self.expect_number)
        if not minimum <= value <= maximum:
            raise FieldError(field, f"must be between {minimum:g} and {maximum:g}")
        return float(value)

    def boolean(self, field: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise FieldError(field, self.expect_boolean)
        return value

    def choice(
        self, field: str, value: object, choices: tuple[str, ...], *, limit: int | None = None
    ) -> str:
        text = self.text(field, value, limit=limit)
        if text not in choices:
            raise FieldError(field, f"{self.expect_one_of} {', '.join(choices)}")
        return text

    def texts(
        self, field: str, value: object, *, limit: int | None = None, max_items: int = MAX_ITEMS
    ) -> tuple[str, ...]:
        """An array of strings; a bad item is named by its index (``tags[1]``)."""
        if not isinstance(value, list):
            raise FieldError(field, self.expect_strings)
        if len(value) > max_items:
            raise FieldError(field, f"more than {max_items} items")
        return tuple(
            self.text(f"{field}[{i}]", item, limit=limit) for i, item in enumerate(value)
        )

    def mapping(self, field: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise FieldError(field, self.expect_object)
        return value


PARAMS_READER = FieldReader(
    expect_string="expected string",
    expect_integer="expected integer",
    expect_number="expected number",
    expect_boolean="expected boolean",
    expect_strings="expected array of strings",
    expect_object="expected object",
    expect_one_of="expected one of",
)
CONFIG_READER = FieldReader(
    expect_string="expected a string",
    expect_integer="expected an integer",
    expect_number="expected a number",
    expect_boolean="expected true or false",
    expect_strings="expected a list of strings",
    expect_object="expected a table",
    expect_one_of="must be one of",
)


class Fields:
    """Typed reads of one JSON object's fields, each named ``<prefix>.<key>``;
    an absent field, or ``null``, reads as ``None`` (or ``()``)."""

    def __init__(self, value: object, prefix: str, reader: FieldReader = PARAMS_READER) -> None:
        self.reader = reader
        self.raw: Mapping[str, Any] = reader.mapping(prefix, value)
        self.prefix = prefix

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}"

    def text(self, key: str, *, limit: int = MAX_TEXT, required: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise FieldError(self.name(key), self.reader.expect_string)
            return None
        return self.reader.text(self.name(key), value, limit=limit)

    def integer(self, key: str, *, minimum: int, maximum: int) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        return self.reader.integer(self.name(key), value, minimum=minimum, maximum=maximum)

    def boolean(self, key: str) -> bool | None:
        value = self.raw.get(key)
        return None if value is None else self.reader.boolean(self.name(key), value)

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        return self.reader.choice(self.name(key), value, choices, limit=MAX_TEXT)

    def texts(self, key: str, *, limit: int = MAX_TEXT) -> tuple[str, ...]:
        value = self.raw.get(key)
        return () if value is None else self.reader.texts(self.name(key), value, limit=limit)

    def obj(self, key: str) -> dict[str, Any] | None:
        value = self.raw.get(key)
        return None if value is None else self.reader.mapping(self.name(key), value)
