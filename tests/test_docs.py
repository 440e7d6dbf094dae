"""The Sphinx docs build with warnings as errors, tutorials included (docs extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("nbsphinx")
pytest.importorskip("pypandoc")


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    docs = Path(__file__).parent.parent / "docs"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q"]
    result = subprocess.run(
        [*cmd, str(docs), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    notebooks = sorted((docs.parent / "tutorials").glob("*.ipynb"))
    assert notebooks
    for notebook in notebooks:
        page = tmp_path / "tutorials" / (notebook.stem + ".html")
        assert page.exists(), f"tutorial {notebook.name} has no page in the docs"
    assert (tmp_path / "api.html").read_text().count("Example") > 50
