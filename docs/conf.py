"""Sphinx configuration for flask_toucan's documentation (built with -W in CI: tox -e docs)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _config_reference import write_reference  # noqa: E402

import flask_toucan  # noqa: E402

project = "flask_toucan"
author = "flask_toucan contributors"
copyright = "2026, flask_toucan contributors"
release = flask_toucan.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
always_document_param_types = False
typehints_fully_qualified = False
nitpicky = False
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
html_theme = "furo"
html_title = "flask_toucan"
html_static_path = ["_static"]
html_css_files = ["tables.css"]
exclude_patterns = ["_build"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3

# The configuration reference is generated from flask_toucan.settings.KEYS: it cannot drift.
write_reference(Path(__file__).resolve().parent / "configuration.rst")
