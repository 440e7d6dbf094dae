"""Sphinx configuration: API by autodoc, tutorials by nbsphinx (never executed)."""

import os
import shutil
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "pyro_causalgen"
author = "pyro_causalgen developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "myst_parser",  # docs/identification.md
]
if shutil.which("pandoc"):  # nbsphinx converts markdown cells with pandoc
    extensions.append("nbsphinx")
nbsphinx_execute = "never"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "alabaster"
nitpicky = False
suppress_warnings = ["ref.python"]
