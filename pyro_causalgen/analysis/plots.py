"""Plots saved to files: observational vs interventional densities, effects, worlds.

Uses matplotlib's non-interactive Agg canvas, so it works on machines with no screen;
every function writes a PNG and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor


def _figure(ncols: int = 1, width: float = 4.0, height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _flat(x: Tensor) -> Any:
    return x.detach().reshape(-1).double().cpu().numpy()


def plot_interventional_densities(
    observational: Mapping[str, Tensor],
    interventional: Mapping[str, Tensor],
    path: str | os.PathLike,
    variables: Sequence[str] | None = None,
    label: str = "do(.)",
    bins: int = 60,
) -> str:
    """Histogram densities per variable: observational vs interventional samples.

    Example::

        >>> import tempfile, os
        >>> obs = {"y": torch.randn(500)}
        >>> intv = {"y": torch.randn(500) + 2}
        >>> path = os.path.join(tempfile.mkdtemp(), "d.png")
        >>> out = plot_interventional_densities(obs, intv, path)
        >>> out.endswith("d.png")
        True
    """
    names = list(variables or [v for v in interventional if v in observational])
    fig, axes = _figure(len(names))
    for ax, name in zip(axes, names):
        ax.hist(
            _flat(observational[name]),
            bins=bins,
            density=True,
            alpha=0.5,
            label="observational",
        )
        ax.hist(
            _flat(interventional[name]), bins=bins, density=True, alpha=0.5, label=label
        )
        ax.set_title(name)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return str(path)


def plot_effect_draws(
    draws: Mapping[str, Tensor],
    path: str | os.PathLike,
    truth: Mapping[str, float] | None = None,
) -> str:
    """One panel per effect: its draws (ensemble members or posterior) and the truth.

    Example::

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "e.png")
        >>> p = plot_effect_draws({"ate": torch.randn(20)}, path, {"ate": 0.0})
        >>> os.path.exists(p)
        True
    """
    fig, axes = _figure(len(draws))
    for ax, (name, values) in zip(axes, draws.items()):
        ax.hist(_flat(values), bins=20, density=True, alpha=0.7)
        if truth and name in truth:
            ax.axvline(truth[name], color="black", linestyle="--", label="truth")
            ax.legend(fontsize="small")
        ax.set_title(name)
    fig.savefig(path, dpi=100)
    return str(path)


def plot_counterfactual_scatter(
    factual: Mapping[str, Tensor],
    counterfactual: Mapping[str, Tensor],
    path: str | os.PathLike,
    variables: Sequence[str] | None = None,
) -> str:
    """Per variable, counterfactual against factual value of each unit.

    Example::

        >>> import tempfile, os
        >>> f = {"y": torch.randn(50)}
        >>> path = os.path.join(tempfile.mkdtemp(), "s.png")
        >>> p = plot_counterfactual_scatter(f, {"y": f["y"] + 1}, path)
        >>> os.path.exists(p)
        True
    """
    names = list(variables or [v for v in counterfactual if v in factual])
    fig, axes = _figure(len(names))
    for ax, name in zip(axes, names):
        f, c = _flat(factual[name]), _flat(counterfactual[name])
        ax.scatter(f, c, s=4, alpha=0.5)
        lo, hi = float(min(f.min(), c.min())), float(max(f.max(), c.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8)
        ax.set_xlabel(f"{name} (factual)")
        ax.set_ylabel(f"{name} (counterfactual)")
    fig.savefig(path, dpi=100)
    return str(path)


__all__ = [
    "plot_counterfactual_scatter",
    "plot_effect_draws",
    "plot_interventional_densities",
]
