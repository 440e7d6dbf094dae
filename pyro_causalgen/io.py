"""Saving and loading models: weights, standardisation buffers, constructor config."""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch
from torch import nn

from pyro_causalgen.errors import CausalModelError

_FORMAT = "pyro_causalgen.model/1"


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Save a model that exposes ``config`` (its constructor arguments) to ``path``.

    Everything needed to rebuild it is stored: the class, the config and the
    ``state_dict`` (weights and standardisation buffers), so :func:`load` returns a
    model whose outputs are bit-identical.

    Example::

        >>> import tempfile, os
        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale")
        >>> path = os.path.join(tempfile.mkdtemp(), "scm.pt")
        >>> save(scm, path)
        >>> type(load(path)).__name__
        'StructuralCausalModel'
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise CausalModelError(
            f"{type(model).__name__} has no `config`; save its state_dict with "
            "torch.save(model.state_dict(), path) and rebuild it yourself (a "
            "flowified program: FlowifiedModel.save_state)"
        )
    cls = type(model)
    torch.save(
        {
            "format": _FORMAT,
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "config": config,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        path,
    )


def load(path: str | os.PathLike, map_location: Any = None) -> nn.Module:
    """Rebuild a model saved by :func:`save`; ``map_location`` picks the device.

    Example::

        >>> import os, tempfile
        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale")
        >>> path = os.path.join(tempfile.mkdtemp(), "scm.pt")
        >>> save(scm, path)
        >>> same = load(path)
        >>> all(torch.equal(a, b) for a, b in zip(scm.state_dict().values(),
        ...                                       same.state_dict().values()))
        True
    """
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise CausalModelError(f"{path} is not a pyro_causalgen model file")
    module_name, qualname = blob["class"].split(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    model = obj(**blob["config"])
    model.load_state_dict(blob["state_dict"], strict=True)
    if map_location is not None:
        model = model.to(map_location)
    return model
