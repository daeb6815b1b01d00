"""What a CLI's screen says it is doing: one recognizer per provider kind.

``recognize(kind, text)`` reads the text of a pane (``capture-pane -p``) and
returns a ``Screen``: its activity (``ready``, ``busy``, ``asking``,
``needs-login``), the question on it, and for the two questions the
orchestrator may answer by policy (``topic`` ``trust`` and ``api-key``) the
keys that answer them with yes. None: no rule knows this screen (a splash,
a CLI version whose screens changed).

The CLIs draw their screens with a terminal UI library (claude and gemini
with Ink, codex with ratatui): what is above the live part of the screen is
history, and may hold an old dialog. So each recognizer looks at the bottom:
the input box when there is one (what is under or just over it says busy or
ready), else the dialog at the foot of the screen.

The screens these rules were written against are test fixtures
(``tests/fixtures/screens/<kind>/``), captured from the pinned versions.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence

import attrs

QUESTION_MAX = 2000


class Activity(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    ASKING = "asking"
    NEEDS_LOGIN = "needs-login"


@attrs.frozen(kw_only=True)
class Screen:
    activity: Activity
    question: str | None = None
    topic: str | None = None  # "trust", "api-key" (answered by policy), else None
    answer: tuple[str, ...] = ()  # the next tmux key towards answering yes to ``topic``
    input_line: str = ""  # the first line of the input box (ready or busy)
    compact_refused: bool = False  # the CLI said it will not compact now
    compact_done: bool = False  # the CLI said it compacted (since the last /compact)

    @property
    def waiting(self) -> bool:
        """Waiting for a person: nothing may be typed into it."""
        return self.activity in (Activity.ASKING, Activity.NEEDS_LOGIN)


def screen(activity: Activity, **fields: object) -> Screen:
    return Screen(activity=activity, **fields)  # type: ignore[arg-type]


# -- shared pieces -------------------------------------------------------------

_BOX_EDGE = "│┃|╭╮╰╯"
_RULE = re.compile(r"^\s*[─━▀▄═╭╰]{20,}")
_SELECTED = re.compile(r"^\s*[│┃]?\s*[❯›●>]\s*(?:\d+\.\s*)?(?P<label>\S.*?)\s*[│┃]?\s*$")


def _clean(line: str) -> str:
    line = line.replace("\u00a0", " ").strip()
    while line and (line[0] in _BOX_EDGE or line[-1] in _BOX_EDGE):
        line = line.strip(_BOX_EDGE).strip()
    return line


def _last(lines: Sequence[str], test: Callable[[str], bool], start: int = 0) -> int | None:
    for index in range(len(lines) - 1, start - 1, -1):
        if test(lines[index]):
            return index
    return None


def _question(lines: Sequence[str], start: int) -> str:
    """The dialog from ``start`` to the foot of the screen, one line per line."""
    text = "\n".join(c for line in lines[start:] if (c := _clean(line)) and not _RULE.match(c))
    return text[:QUESTION_MAX]


def _choose(lines: Sequence[str], start: int, target: re.Pattern[str]) -> tuple[str, ...]:
    """The next key towards choosing ``target``'s option in a list: a move
    towards it while another is selected, Enter once it is (one key at a
    time, so that Enter never confirms an option the screen does not show
    selected); () when either cannot be found."""
    options: list[bool] = []  # whether each option line is the selected one
    goal = None
    for index in range(start, len(lines)):
        line = _clean(lines[index])
        if not line:
            continue
        selected = bool(_SELECTED.match(lines[index])) and line[0] in "❯›●>"
        label = line[1:].strip() if selected else line
        if target.search(label):
            goal = len(options)
            options.append(selected)
        elif selected or re.match(r"^\d+\.\s", label):
            options.append(selected)
    current = next((i for i, chosen in enumerate(options) if chosen), None)
    if goal is None or current is None:
        return ()
    if goal == current:
        return ("Enter",)
    return ("Down",) if goal > current else ("Up",)


def _box(lines: Sequence[str], prompt: re.Pattern[str]) -> int | None:
    """The line of the input box: the last prompt line right under a rule."""
    for index in range(len(lines) - 1, 0, -1):
        if prompt.match(lines[index]) and _RULE.match(lines[index - 1]):
            return index
    return None


# -- claude ----------------------------------------------------------------------

_CLAUDE_PROMPT = re.compile(r"^[❯>][\s\u00a0]")
_CLAUDE_TRUST = re.compile(r"trust this folder|Is this a project you created or one you trust")
_CLAUDE_API_KEY = re.compile(r"Do you want to use this API key\?")
_CLAUDE_LOGIN = re.compile(
    r"Select login method|Log in with your|Choose the text style|Missing API key|/login"
)
_CLAUDE_PLACEHOLDERS = ("Once fixed, resend your message", "Resend your message to try again")
_CLAUDE_NO_LOGIN = re.compile(r"Not logged in|Please run /login")
_CLAUDE_REFUSED = re.compile(r"(Not enough|No) messages to compact|Error compacting")
_DIALOG_HINT = re.compile(
    r"Enter to confirm|Esc to cancel|esc to cancel|Do you want to|Esc to clear|Type to search"
)


def _claude(text: str) -> Screen | None:
    lines = text.rstrip("\n").split("\n")
    box = _box(lines, _CLAUDE_PROMPT)
    if box is None:
        return _claude_dialog(lines)
    under = lines[box + 1 :]
    input_line = _clean(lines[box][1:])
    if input_line in _CLAUDE_PLACEHOLDERS:  # drawn dim in an empty box
        input_line = ""
    turn = _last(lines[: box - 1], lambda line: bool(_CLAUDE_PROMPT.match(line)))
    if turn is not None and any(_CLAUDE_NO_LOGIN.search(line) for line in lines[turn : box]):
        start = next(i for i in range(turn, box) if _CLAUDE_NO_LOGIN.search(lines[i]))
        return screen(Activity.NEEDS_LOGIN, question=_question(lines[: box - 1], start))
    since = _last(lines[:box], lambda line: line.replace("\u00a0", " ").startswith("❯ /compact"))
    after = "\n".join(lines[since:box]) if since is not None else ""
    refused = bool(_CLAUDE_REFUSED.search(after))
    done = "Compacted" in after
    if any("esc to interrupt" in line for line in under):
        return screen(Activity.BUSY, input_line=input_line)
    return screen(
        Activity.READY, input_line=input_line, compact_refused=refused, compact_done=done
    )


def _claude_dialog(lines: list[str]) -> Screen | None:
    start = _last(lines, lambda line: bool(_RULE.match(line))) or 0
    body = "\n".join(lines[start:])
    question = _question(lines, start)
    if _CLAUDE_TRUST.search(body):
        answer = _choose(lines, start, re.compile(r"^Yes, I trust"))
        return screen(Activity.ASKING, question=question, topic="trust", answer=answer)
    if _CLAUDE_API_KEY.search(body):
        answer = _choose(lines, start, re.compile(r"^Yes$"))
        return screen(Activity.ASKING, question=question, topic="api-key", answer=answer)
    if _CLAUDE_LOGIN.search(body):
        return screen(Activity.NEEDS_LOGIN, question=question)
    if _DIALOG_HINT.search(body):
        return screen(Activity.ASKING, question=question)
    return None


# -- codex -----------------------------------------------------------------------

_CODEX_PROMPT = re.compile(r"^›\s")
_CODEX_FOOT = re.compile(
    r"\? for shortcuts|for agents|context left|tab to queue|esc to interrupt|^\s+\S+ \S+ · "
)
_CODEX_TRUST = re.compile(r"Trust this folder\?|Do you trust the (contents|files)")
_CODEX_LOGIN = re.compile(
    r"Sign in with ChatGPT|Choose how you want to use Codex|Sign in with Device"
)
_CODEX_QUESTION = re.compile(r"Would you like to|Allow Codex to|Do you want to")
_CODEX_ASK = re.compile(
    r"Would you like to|Allow Codex|approve|esc back|enter continue|Press enter to confirm|"
    r"enter/esc confirm",
    re.IGNORECASE,
)


def _codex(text: str) -> Screen | None:
    lines = text.rstrip("\n").split("\n")
    box = _last(lines, lambda line: bool(_CODEX_PROMPT.match(line)))
    footed = box is not None and any(_CODEX_FOOT.search(line) for line in lines[box + 1 :])
    if box is None or not footed or re.match(r"^›\s+\d+\.\s", lines[box]):
        return _codex_dialog(lines)  # no input box, or the "›" is a list's selection
    input_line = _clean(lines[box][1:])
    if input_line == "Ask Codex to do anything":  # the placeholder of an empty input
        input_line = ""
    above = lines[max(0, box - 6) : box]
    since = _last(lines[:box], lambda line: bool(_CODEX_PROMPT.match(line)))  # the last turn
    after = "\n".join(lines[since or 0 : box])
    if any("esc to interrupt" in line for line in above):
        return screen(Activity.BUSY, input_line=input_line)
    question_start = _last(above, lambda line: bool(_CODEX_ASK.search(line)))
    if question_start is not None:
        start = max(0, box - 6) + question_start
        return screen(Activity.ASKING, question=_question(lines, start), input_line=input_line)
    return screen(
        Activity.READY,
        input_line=input_line,
        compact_refused="not enough" in after.lower(),
        compact_done="Context compacted" in after,
    )


def _codex_dialog(lines: list[str]) -> Screen | None:
    body = "\n".join(lines)
    if _CODEX_LOGIN.search(body):
        start = _last(lines, lambda line: "Welcome to Codex" in line) or 0
        return screen(Activity.NEEDS_LOGIN, question=_question(lines, start))
    if _CODEX_TRUST.search(body):
        start = _last(lines, lambda line: bool(_CODEX_TRUST.search(line))) or 0
        head = _last(lines[:start], lambda line: "Folder access" in line) or start
        answer = _choose(lines, start, re.compile(r"^1?\.?\s*Trust and continue|^Yes"))
        return screen(Activity.ASKING, question=_question(lines, head), topic="trust",
                      answer=answer)  # fmt: skip
    ask = _last(lines, lambda line: bool(_CODEX_QUESTION.search(line)))
    if ask is None:
        ask = _last(lines, lambda line: bool(_CODEX_ASK.search(line)))
    if ask is not None:
        return screen(Activity.ASKING, question=_question(lines, ask))
    return None


# -- gemini ----------------------------------------------------------------------

_SPINNER = re.compile(r"^\s*[\u2800-\u28ff]\s")  # a braille spinner starts the line
_GEMINI_PROMPT = re.compile(r"^\s*[>!*]\s")
_GEMINI_PLACEHOLDER = "Type your message or @path/to/file"
_GEMINI_TRUST = re.compile(r"Do you trust (the files in )?this folder\?")
_GEMINI_LOGIN = re.compile(
    r"How would you like to authenticate|Please visit the following URL to authorize|"
    r"Enter the authorization code|Waiting for auth|Enter Gemini API Key"
)
_GEMINI_ASK = re.compile(
    r"Allow execution|Apply this change\?|Do you want to proceed|Allow once|Answer Questions|"
    r"Enter to select"
)


def _gemini(text: str) -> Screen | None:
    lines = text.rstrip("\n").split("\n")
    box = _box(lines, _GEMINI_PROMPT)
    if box is None or any(line.lstrip().startswith("╭") for line in lines[box:]):
        return _gemini_dialog(lines)  # no input box, or a dialog under it
    input_line = _clean(_GEMINI_PROMPT.sub("", lines[box], count=1))
    if input_line == _GEMINI_PLACEHOLDER:
        input_line = ""
    top = _last(lines[:box], lambda line: bool(_RULE.match(line))) or box
    above = lines[max(0, top - 6) : top]
    if any("esc to cancel" in line or _SPINNER.match(line) for line in above):
        return screen(Activity.BUSY, input_line=input_line)
    since = _last(lines[:top], lambda line: "/compress" in line)
    after = "\n".join(lines[since:top]) if since is not None else ""
    return screen(
        Activity.READY,
        input_line=input_line,
        compact_refused="Nothing to compress" in after or "Failed to compress" in after,
        compact_done="Chat history compressed" in after or "compressed from" in after,
    )


def _gemini_dialog(lines: list[str]) -> Screen | None:
    body = "\n".join(lines)
    start = _last(lines, lambda line: line.lstrip().startswith("╭")) or 0
    tail = "\n".join(lines[start:])
    if _GEMINI_TRUST.search(tail):
        answer = _choose(lines, start, re.compile(r"^1?\.?\s*Trust folder"))
        return screen(Activity.ASKING, question=_question(lines, start), topic="trust",
                      answer=answer)  # fmt: skip
    if _GEMINI_LOGIN.search(tail) or _GEMINI_LOGIN.search(body[-2000:]):
        begin = start if _GEMINI_LOGIN.search(tail) else max(0, len(lines) - 8)
        return screen(Activity.NEEDS_LOGIN, question=_question(lines, begin))
    if _GEMINI_ASK.search(tail):
        return screen(Activity.ASKING, question=_question(lines, start))
    return None


# -- the providers -----------------------------------------------------------------

_RECOGNIZERS: dict[str, Callable[[str], Screen | None]] = {
    "claude": _claude,
    "codex": _codex,
    "gemini": _gemini,
}
_API_KEYS = {"claude": "ANTHROPIC_API_KEY", "codex": "OPENAI_API_KEY", "gemini": "GEMINI_API_KEY"}


def has_screens(kind: str) -> bool:
    return kind in _RECOGNIZERS


def api_key_variable(kind: str) -> str | None:
    """The variable holding the CLI's API key (its "use this key?" question)."""
    return _API_KEYS.get(kind)


def recognize(kind: str, text: str) -> Screen | None:
    recognizer = _RECOGNIZERS.get(kind)
    return recognizer(text) if recognizer is not None else None
