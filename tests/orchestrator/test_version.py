"""The version the daemon registers with: what importlib.metadata would say.

It is read from our own ``*.dist-info`` / ``*.egg-info`` along ``sys.path``
directly (importlib.metadata and the email parser it loads cost about 1 MB);
these tests hold the two to the same answer.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import pytest

from orchestrator._version import DISTRIBUTION, current_version


def _both() -> tuple[str, str]:
    importlib.invalidate_caches()
    return current_version(), importlib.metadata.version(DISTRIBUTION)


def test_the_installed_version_is_the_one_importlib_metadata_reads() -> None:
    ours, theirs = _both()
    assert ours == theirs and ours != "0.0.0"


def test_a_newer_install_earlier_on_the_path_wins_for_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "Relay.Orchestrator-9.8.7.dist-info"  # spelled another way: same name
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: relay-orchestrator\nVersion: 9.8.7\n\nVersion: 1.0.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _both() == ("9.8.7", "9.8.7")


def test_a_legacy_egg_info_file_is_read_like_importlib_metadata_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "relay_orchestrator-2.0.1-py3.11.egg-info").write_text(
        "Metadata-Version: 1.1\nName: relay-orchestrator\nVersion: 2.0.1\n"
    )
    (tmp_path / "relay_orchestrator_extra-5.0.0.dist-info").mkdir()  # another distribution
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _both() == ("2.0.1", "2.0.1")
