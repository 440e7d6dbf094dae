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


def plot_posterior(
    data: Any,
    var_names: Sequence[str] | None = None,
    *,
    group: str = "posterior",
    ref_val: float | None = None,
) -> Any:
    """Posterior densities of ``data`` (from :func:`to_inference_data`), any ArviZ.

    ArviZ 0.x draws with ``arviz.plot_posterior`` (``ref_val`` marks the truth);
    ArviZ 1.x has no ``plot_posterior``: its successor ``arviz.plot_dist`` draws the
    densities and ``arviz.add_lines`` the reference value.

    :param data: ``InferenceData`` (0.x) or ``DataTree`` (1.x).
    :param var_names: variables to draw (default: all of ``group``).
    :param group: the group to draw from (``posterior``, ``predictions``, ...).
    :param ref_val: a reference value (e.g. the true effect) drawn on every panel.
    :returns: the matplotlib axes (0.x) or the ``PlotCollection`` (1.x).

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> idata = to_inference_data({"posterior": {"effect": torch.randn(2, 50)}})
        >>> plots = plot_posterior(idata, ["effect"], ref_val=0.0)
    """
    import arviz

    names = None if var_names is None else list(var_names)
    if arviz_major() >= 1:  # pragma: no cover - exercised where ArviZ 1.x is installed
        plots = arviz.plot_dist(data, var_names=names, group=group)
        if ref_val is not None:
            arviz.add_lines(plots, values=ref_val)
        return plots
    return arviz.plot_posterior(data, var_names=names, group=group, ref_val=ref_val)
