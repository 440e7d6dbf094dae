"""Location-scale mechanisms ``x = loc(parents) + scale(parents) * u``, u ~ N(0, 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import zuko
from torch import Tensor, nn
from torch.distributions.transforms import AffineTransform, Transform

from pyro_causalgen.mechanisms.base import Mechanism


class LocScaleMechanism(Mechanism):
    """Gaussian additive-noise mechanism with a neural (or linear) location.

    With ``hidden_features=()`` the location is linear in the (standardised) parents, so
    an SCM built from these mechanisms is linear-Gaussian, with closed-form
    interventional and counterfactual distributions. ``heteroscedastic=True`` lets the
    scale depend on the parents too.

    :param event_shape: ``()`` or ``(d,)``.
    :param parents: ordered ``name -> event shape`` of the parents.
    :param hidden_features: hidden widths of the location network (``()``: linear).
    :param heteroscedastic: whether the scale is a function of the parents.
    :param name: site name for error messages.
    :param support: "real", "positive" or "unit_interval" (see :class:`Mechanism`).

    Example::

        >>> mech = LocScaleMechanism(parents={"x": ()})
        >>> d = mech(x=torch.tensor([0.0, 1.0]))
        >>> d.sample().shape
        torch.Size([2])
    """

    def __init__(
        self,
        event_shape: int | Sequence[int] = (),
        parents: Mapping[str, Any] | Sequence[str] | None = None,
        hidden_features: Sequence[int] = (),
        heteroscedastic: bool = False,
        name: str | None = None,
        support: str | Any = "real",
    ) -> None:
        super().__init__(event_shape, parents, name, support)
        self.hidden_features = tuple(hidden_features)
        self.heteroscedastic = heteroscedastic
        d, c = self.features, self.context_features
        out = 2 * d if heteroscedastic else d
        self.net: nn.Module | None = (
            zuko.nn.MLP(c, out, hidden_features=self.hidden_features) if c else None
        )
        self.loc = nn.Parameter(torch.zeros(d)) if c == 0 else None
        self.log_scale = (
            nn.Parameter(torch.zeros(d)) if (c == 0 or not heteroscedastic) else None
        )

    @property
    def config(self) -> dict[str, Any]:
        return {
            **super().config,
            "hidden_features": self.hidden_features,
            "heteroscedastic": self.heteroscedastic,
        }

    def loc_and_scale(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Location and scale in standardised space, each ``(*batch, features)``."""
        if self.net is None:
            assert self.loc is not None and self.log_scale is not None
            return self.loc, self.log_scale.exp()
        out = self.net(context)
        if self.heteroscedastic:
            loc, raw = out.chunk(2, dim=-1)
            return loc, F.softplus(raw) + 1e-5
        assert self.log_scale is not None
        return out, self.log_scale.exp()

    def flow_transform(self, context: Tensor | None) -> Transform:
        loc, scale = self.loc_and_scale(context)
        return AffineTransform(-loc / scale, 1.0 / scale, event_dim=1)
