"""Export draws to ArviZ ``InferenceData`` with named dims, for ArviZ 0.x and 1.x.

Draws are arrays ``(chain, draw, *dims)``; every extra dim is named (``unit``,
``world``, ...) and may carry coordinates (``world = ["factual", "counterfactual"]``).
ArviZ 0.x takes groups as keyword arguments of ``from_dict``; ArviZ 1.x takes one
mapping ``{group: {var: array}}`` and returns an xarray ``DataTree``. Both are handled
here so callers never see the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

GROUPS = ("posterior", "posterior_predictive", "predictions", "observed_data")


def arviz_major() -> int:
    """The installed ArviZ major version."""
    import arviz

    return int(arviz.__version__.split(".")[0])


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def to_inference_data(
    groups: Mapping[str, Mapping[str, Any]],
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, Sequence[Any]] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Any:
    """Build an ArviZ object from ``{group: {variable: (chain, draw, *dims) array}}``.

    :param groups: draws per group (``posterior``, ``posterior_predictive``,
        ``predictions``; ``observed_data`` arrays have no chain/draw dims).
    :param dims: names of each variable's dims after ``chain`` and ``draw``.
    :param coords: coordinate values per named dim.
    :param attrs: attributes recorded on every group (e.g. the query).
    :returns: ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x).

    Example::

        >>> idata = to_inference_data(
        ...     {"predictions": {"y": torch.zeros(1, 4, 3, 2)}},
        ...     dims={"y": ["unit", "world"]},
        ...     coords={"world": ["factual", "counterfactual"]},
        ...     attrs={"query": "P(y_{x=1})"},
        ... )
        >>> list(idata["predictions"]["y"].dims)
        ['chain', 'draw', 'unit', 'world']
    """
    import arviz

    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown ArviZ group(s) {unknown}; use {list(GROUPS)}")
    data = {g: {k: _numpy(v) for k, v in vs.items()} for g, vs in groups.items() if vs}
    dims = {k: list(v) for k, v in (dims or {}).items()}
    coords = {k: list(v) for k, v in (coords or {}).items()}
    attrs = {k: str(v) for k, v in (attrs or {}).items()}
    if arviz_major() >= 1:  # pragma: no cover - exercised where ArviZ 1.x is installed
        # 1.x reads the dims of the ``predictions`` group from pred_dims / pred_coords
        tree = arviz.from_dict(
            data, dims=dims, coords=coords, pred_dims=dims, pred_coords=coords
        )
        for group in data:
            tree[group].attrs.update(attrs)
        return tree
    idata = arviz.from_dict(**data, dims=dims, coords=coords, attrs=attrs)
    for group in data:
        getattr(idata, group).attrs.update(attrs)
    return idata
