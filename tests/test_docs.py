"""The Sphinx docs build with warnings as errors (when Sphinx is installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    docs = Path(__file__).parent.parent / "docs"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q"]
    result = subprocess.run(
        [*cmd, str(docs), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
