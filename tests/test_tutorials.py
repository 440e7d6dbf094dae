"""Every notebook in ``tutorials/`` runs top to bottom in smoke mode (``CI`` set).

Notebooks follow Pyro's convention ``smoke_test = ('CI' in os.environ)`` to shrink data
and training budgets; this test sets ``CI`` for the kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    root = str(Path(__file__).parent.parent)  # the package, even when not installed
    paths = (root, os.environ.get("PYTHONPATH"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": tmp_path}},
    )
    client.execute()


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_is_valid_nbformat(path: Path) -> None:
    """Valid as stored: nbformat 4.5 needs a unique id on every cell."""
    import json

    cells = json.loads(path.read_text())["cells"]
    missing = [i for i, cell in enumerate(cells) if "id" not in cell]
    assert not missing, f"{path.name}: cells {missing} have no id"
    ids = [cell["id"] for cell in cells]
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate cell ids"
    nbformat.validate(nbformat.reads(path.read_text(), as_version=4))
