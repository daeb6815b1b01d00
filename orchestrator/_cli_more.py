"""The service-facing commands: install, uninstall, logs, upgrade, ctl."""

from __future__ import annotations

import argparse


def register_more(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    return None
