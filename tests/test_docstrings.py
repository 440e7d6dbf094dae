"""Every public object (in a package's ``__all__``) has a runnable example.

The examples themselves run as doctests (``--doctest-modules`` on the package); this
test makes sure none is missing. Data constants (graphs, registries, world names)
cannot carry a docstring and are documented where they are defined.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import pyro_causalgen


def _public_objects() -> dict[str, object]:
    modules = [pyro_causalgen] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(
            pyro_causalgen.__path__, pyro_causalgen.__name__ + "."
        )
        if info.ispkg
    ]
    found: dict[str, object] = {}
    seen: set[int] = set()
    for module in modules:
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if id(obj) in seen or not (inspect.isclass(obj) or callable(obj)):
                continue
            seen.add(id(obj))
            found[f"{module.__name__}.{name}"] = obj
    return found


PUBLIC = _public_objects()


def test_the_public_api_is_found():
    assert len(PUBLIC) > 80
    assert "pyro_causalgen.do" in PUBLIC and "pyro_causalgen.fit" in PUBLIC


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_object_has_a_runnable_example(name):
    doc = inspect.getdoc(PUBLIC[name]) or ""
    assert ">>>" in doc, f"{name} has no '>>>' example in its docstring"
