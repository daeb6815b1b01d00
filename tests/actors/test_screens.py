"""Each provider's screens, as the pinned CLIs drew them (tests/fixtures/screens/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors._screens import Activity, recognize

FIXTURES = Path(__file__).parents[1] / "fixtures" / "screens"

# What each captured screen is. A fixture added without a line here fails
# the test below: every screen a pinned CLI shows has a known meaning.
EXPECTED: dict[str, tuple[Activity | None, str | None]] = {
    "claude/api_key": (Activity.ASKING, "api-key"),
    "claude/auto_mode_check_unavailable": (Activity.ASKING, None),
    "claude/interrupted": (Activity.READY, None),
    "claude/login": (Activity.NEEDS_LOGIN, None),
    "claude/model_error_401": (Activity.NEEDS_LOGIN, None),  # "Please run /login"
    "claude/model_error_500": (Activity.READY, None),
    "claude/not_logged_in": (Activity.READY, None),  # says nothing until a prompt
    "claude/not_logged_in_after_prompt": (Activity.NEEDS_LOGIN, None),
    "claude/onboarding": (None, None),  # printed as it exits
    "claude/permission_auto_unchecked": (Activity.ASKING, None),
    "codex/model_error_missing_key": (Activity.READY, None),
    "codex/model_upgrade": (Activity.ASKING, None),
    "gemini/at_file_popup": (Activity.READY, None),
    "gemini/ask_user_question": (Activity.ASKING, None),
    "gemini/busy_after_trust_relaunch": (Activity.BUSY, None),
    "gemini/busy_retrying_500": (Activity.BUSY, None),
    "gemini/busy_retrying_503": (Activity.BUSY, None),
    "gemini/busy_tool_running": (Activity.BUSY, None),
    "gemini/cancelled_esc": (Activity.READY, None),
    "gemini/model_error_unreachable": (Activity.READY, None),
    "gemini/permission_denied": (Activity.READY, None),
    "gemini/permission_edit": (Activity.ASKING, None),
    "gemini/ready_after_reply_after_trust_relaunch": (Activity.READY, None),
    "gemini/ready_after_trust_relaunch": (Activity.READY, None),
    "gemini/ready_default_settings": (Activity.READY, None),
    "gemini/ctrl_c_once": (Activity.READY, None),
    "gemini/quit_summary": (None, None),  # printed as it exits
    "gemini/ready_plan_mode": (Activity.READY, None),
    "gemini/ready_resumed": (Activity.READY, None),
    "gemini/usage_error_approval_mode": (None, None),  # printed as it exits
    "claude/busy": (Activity.BUSY, None),
    "claude/bypass_confirm": (Activity.ASKING, None),
    "claude/bypass_root_refused": (None, None),  # printed as it exits
    "claude/compact_refused": (Activity.READY, None),
    "claude/compacted": (Activity.READY, None),
    "claude/compacting": (Activity.BUSY, None),
    "claude/model_error_500_retrying": (Activity.BUSY, None),
    "claude/permission": (Activity.ASKING, None),
    "claude/ready": (Activity.READY, None),
    "claude/ready_after_reply": (Activity.READY, None),
    "claude/resume_picker_no_match": (Activity.ASKING, None),
    "claude/trust": (Activity.ASKING, "trust"),
    "codex/busy": (Activity.BUSY, None),
    "codex/compact_empty_conversation": (Activity.READY, None),
    "codex/compacting": (Activity.BUSY, None),
    "codex/interrupted": (Activity.READY, None),
    "codex/login": (Activity.NEEDS_LOGIN, None),
    "codex/model_error_401": (Activity.READY, None),
    "codex/model_error_500": (Activity.READY, None),
    "codex/model_error_500_retrying": (Activity.BUSY, None),
    "codex/permission": (Activity.ASKING, None),
    "codex/ready": (Activity.READY, None),
    "codex/ready_after_reply": (Activity.READY, None),
    "codex/trust": (Activity.ASKING, "trust"),
    "gemini/auth": (Activity.NEEDS_LOGIN, None),
    "gemini/auth_api_key_entry": (Activity.NEEDS_LOGIN, None),
    "gemini/auth_key_detected": (Activity.NEEDS_LOGIN, None),
    "gemini/busy": (Activity.BUSY, None),
    "gemini/compact_refused": (Activity.READY, None),
    "gemini/compacted": (Activity.READY, None),
    "gemini/compacting": (Activity.BUSY, None),
    "gemini/login": (Activity.NEEDS_LOGIN, None),
    "gemini/model_error_401": (Activity.READY, None),
    "gemini/permission": (Activity.ASKING, None),
    "gemini/ready": (Activity.READY, None),
    "gemini/ready_after_reply": (Activity.READY, None),
    "gemini/trust": (Activity.ASKING, "trust"),
}
SCREENS = sorted(f"{p.parent.name}/{p.stem}" for p in FIXTURES.glob("*/*.txt"))


def read(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text()


def test_every_fixture_has_an_expectation() -> None:
    assert SCREENS, "no screen fixtures"
    assert sorted(EXPECTED) == SCREENS


@pytest.mark.parametrize("name", SCREENS)
def test_each_screen_is_recognized_as_what_it_is(name: str) -> None:
    activity, topic = EXPECTED[name]
    seen = recognize(name.split("/")[0], read(name))
    if activity is None:
        assert seen is None
        return
    assert seen is not None, f"{name}: no rule recognizes this screen"
    assert (seen.activity, seen.topic) == (activity, topic)
    if seen.waiting:
        assert seen.question and len(seen.question) <= 2000
        assert "│" not in seen.question and "─" * 5 not in seen.question
    else:
        assert seen.question is None


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("claude/trust", ("Down",)),  # "No, exit" is selected first
        ("claude/api_key", ("Up",)),  # "No (recommended)" is selected first
        ("codex/trust", ("Enter",)),
        ("gemini/trust", ("Enter",)),
    ],
)
def test_the_two_questions_answered_by_policy_have_keys_that_say_yes(
    name: str, keys: tuple[str, ...]
) -> None:
    seen = recognize(name.split("/")[0], read(name))
    assert seen is not None and seen.answer == keys


def test_enter_only_once_the_screen_shows_yes_selected() -> None:
    moved = read("claude/trust").replace("❯ No, exit", "  No, exit").replace(
        "   Yes, I trust this folder", " ❯ Yes, I trust this folder"
    )
    seen = recognize("claude", moved)
    assert seen is not None and seen.topic == "trust" and seen.answer == ("Enter",)
    key = read("claude/api_key").replace("❯ No (recommended)", "  No (recommended)").replace(
        "    Yes", "  ❯ Yes", 1
    )
    seen = recognize("claude", key)
    assert seen is not None and seen.topic == "api-key" and seen.answer == ("Enter",)


def test_other_questions_carry_no_answer() -> None:
    for name in ("claude/permission", "claude/bypass_confirm", "codex/permission",
                 "gemini/permission", "codex/login", "gemini/auth"):
        seen = recognize(name.split("/")[0], read(name))
        assert seen is not None and seen.answer == () and seen.topic is None, name


def test_compaction_ends_are_told_apart() -> None:
    done = recognize("claude", read("claude/compacted"))
    assert done is not None and done.compact_done and not done.compact_refused
    refused = recognize("claude", read("claude/compact_refused"))
    assert refused is not None and refused.compact_refused
    codex = recognize("codex", read("codex/compact_empty_conversation"))
    assert codex is not None and codex.compact_done
    gemini = recognize("gemini", read("gemini/compacted"))
    assert gemini is not None and gemini.compact_done


def test_the_input_line_is_what_waits_in_the_box() -> None:
    ready = recognize("claude", read("claude/ready"))
    assert ready is not None and ready.input_line == ""
    typed = read("claude/ready").replace("❯\u00a0", "❯\u00a0hello there", 1)
    seen = recognize("claude", typed)
    assert seen is not None and seen.input_line == "hello there"
    codex = recognize("codex", read("codex/ready"))
    assert codex is not None and codex.input_line == ""  # its placeholder is not input
    gemini = recognize("gemini", read("gemini/ready"))
    assert gemini is not None and gemini.input_line == ""


def test_an_unknown_kind_or_screen_is_none() -> None:
    assert recognize("command", read("claude/ready")) is None
    assert recognize("claude", "") is None
    assert recognize("codex", "hello\nworld\n") is None
