"""Writes docs/configuration.rst from flask_toucan.settings.KEYS (the one place keys live)."""

from __future__ import annotations

from pathlib import Path

from flask_toucan.settings import DERIVED, KEYS


def _default(value: object) -> str:
    if value is DERIVED:
        return "derived (see description)"
    return f"``{value!r}``"


def write_reference(path: Path) -> None:
    lines = [
        "Configuration reference",
        "=======================",
        "",
        ".. This file is generated from flask_toucan.settings.KEYS by docs/conf.py.",
        "",
        "Every key is set with ``app.config.setdefault`` at ``init_app``, so ``app.config``",
        "shows what is in force, and checked there: a wrong value raises",
        "``ToucanConfigError`` naming the key. An unknown ``TOUCAN_*`` key is warned about",
        "with the closest known one. ``flask toucan config`` prints them all, secrets redacted.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 20 50",
        "",
        "   * - key",
        "     - default",
        "     - meaning",
    ]
    for key in KEYS:
        lines += [
            f"   * - ``{key.name}``",
            f"     - {_default(key.default)}",
            f"     - {key.doc}",
        ]
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
