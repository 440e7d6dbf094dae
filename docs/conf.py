"""Sphinx configuration: API by autodoc, tutorials by nbsphinx (never executed).

The tutorials are copied from ``../tutorials`` into ``docs/tutorials`` (ignored by
git) at every build.
"""

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


def _find_pandoc() -> bool:
    """Put pandoc on PATH (nbsphinx needs it): the system's, else pypandoc-binary's."""
    if shutil.which("pandoc"):
        return True
    try:
        import pypandoc
    except ImportError:
        return False
    found = pypandoc.get_pandoc_path()
    os.environ["PATH"] = os.path.dirname(found) + os.pathsep + os.environ["PATH"]
    return True


def _copy_tutorials() -> None:
    """Sphinx reads sources under docs/ only: mirror ../tutorials/*.ipynb there."""
    source = os.path.join(HERE, "..", "tutorials")
    target = os.path.join(HERE, "tutorials")
    os.makedirs(target, exist_ok=True)
    for name in sorted(os.listdir(source)):
        if name.endswith(".ipynb"):
            shutil.copyfile(os.path.join(source, name), os.path.join(target, name))


HERE = os.path.dirname(os.path.abspath(__file__))
if not _find_pandoc():
    raise RuntimeError(
        "the tutorials need pandoc: pip install -e '.[docs]' (pypandoc-binary)"
    )
extensions.append("nbsphinx")
_copy_tutorials()
nbsphinx_execute = "never"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "alabaster"
nitpicky = False
suppress_warnings = ["ref.python"]
