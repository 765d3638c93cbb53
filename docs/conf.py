"""Sphinx configuration of the sb3_cherry documentation (``make docs``: ``sphinx-build -W``, warnings are errors)."""

import os
import sys

# the package from this checkout, not an installed copy
sys.path.insert(0, os.path.abspath(".."))

with open(os.path.join(os.path.dirname(__file__), "..", "sb3_cherry", "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

# -- Project information -----------------------------------------------------
project = "sb3_cherry"
copyright = "2026, sb3_cherry contributors"
author = "sb3_cherry contributors"
version = __version__
release = __version__

# -- General configuration ---------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]
# autodoc: signatures with their type hints, members in source order, no SB3 docstrings pulled in
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autosummary_generate = False

templates_path: list[str] = []
source_suffix = ".rst"
master_doc = "index"
language = "en"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
pygments_style = "sphinx"

# -- Options for HTML output -------------------------------------------------
html_theme = "sphinx_rtd_theme"
html_static_path: list[str] = []
htmlhelp_basename = "sb3_cherrydoc"
