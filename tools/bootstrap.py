#!/usr/bin/env python3
"""Set up a virtual environment for pyro_causalgen, then run the demo or the tests.

Usage::

    python3 tools/bootstrap.py demo    # set up, then run `causalgen demo`
    python3 tools/bootstrap.py test    # set up, then run the test suite (fast tier)
    python3 tools/bootstrap.py test --slow   # also the slow statistical tier
                                             # (always on when CI is set)

Only the Python standard library is used here. The environment lives in ``.venv``.

Torch: if the interpreter that runs this script can already import torch (for example
a CUDA build you installed), the environment sees it (``--system-site-packages``) and
it is kept. Otherwise ``torch==2.13.0`` is installed first; set ``TORCH_INDEX_URL``
(e.g. ``https://download.pytorch.org/whl/cpu``) to choose where it comes from, which
keeps a CPU-only machine from downloading CUDA wheels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
TORCH_PIN = "torch==2.13.0"


def _bin(name: str) -> Path:
    sub = "Scripts" if os.name == "nt" else "bin"
    return VENV / sub / name


def _run(*cmd: str | Path) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def _can_import(python: str | Path, module: str) -> bool:
    probe = [str(python), "-c", f"import {module}"]
    return subprocess.run(probe, capture_output=True, cwd=ROOT).returncode == 0


def setup() -> Path:
    """Create ``.venv`` (once), install torch if absent, install the package."""
    python = _bin("python")
    stamp = VENV / ".pyro_causalgen-installed"
    pyproject = ROOT / "pyproject.toml"
    if stamp.exists() and stamp.stat().st_mtime >= pyproject.stat().st_mtime:
        return python
    if not python.exists():
        system_torch = _can_import(sys.executable, "torch")
        print(f"creating {VENV} (system torch visible: {system_torch})", flush=True)
        venv.EnvBuilder(with_pip=True, system_site_packages=system_torch).create(VENV)
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    if not _can_import(python, "torch"):
        index = os.environ.get("TORCH_INDEX_URL")
        _run(*pip, TORCH_PIN, *(["--index-url", index] if index else []))
    _run(*pip, "-e", ".[test]")
    stamp.touch()
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    python = setup()
    if argv[0] == "demo":
        _run(python, "-m", "pyro_causalgen", "demo", *argv[1:])
    elif argv[0] == "test":
        extra = list(argv[1:])
        if os.environ.get("CI") and "--slow" not in extra:
            extra.append("--slow")  # CI has the time for the slow statistical tier
        _run(python, "-m", "pytest", *extra)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as err:
        sys.exit(err.returncode or 1)
