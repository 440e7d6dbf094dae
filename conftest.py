"""Shared fixtures: ``--device`` / ``--dtype`` options so the suite reruns on a GPU.

Lives at the repository root so that it serves ``tests/`` and the doctests.
Run ``pytest --device cuda`` on a machine with a GPU to rerun every device-aware test
there; ``--dtype float64`` reruns them in double precision.
"""

from __future__ import annotations

import pyro
import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for the tests")
    parser.addoption(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="default dtype",
    )
    parser.addoption("--slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if config.getoption("--slow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow tier: pass --slow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA requested but not available")
    return dev


@pytest.fixture(scope="session")
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture(autouse=True)
def _seed_and_clear() -> None:
    """Every test starts from the same seed with an empty Pyro param store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    pyro.enable_validation(True)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    """Doctests see ``torch``, ``pyro`` and ``dist`` without importing them."""
    import pyro.distributions as dist

    doctest_namespace.update(torch=torch, pyro=pyro, dist=dist)
