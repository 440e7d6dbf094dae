"""Conditional normalizing-flow mechanisms built on zuko (NSF, MAF)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import zuko
from torch import Tensor
from torch.distributions.transforms import Transform

from pyro_causalgen.mechanisms.base import Mechanism


class FlowMechanism(Mechanism):
    """A conditional normalizing flow ``x = f(u; parents)`` over a site's parents.

    The flow is a zuko autoregressive flow whose hyper-networks take the standardised,
    flattened parents as context. Its inverse (abduction) is exact; for vector sites
    sampling takes ``features`` autoregressive passes, scoring takes one.

    :param event_shape: ``()`` for a scalar site or ``(d,)``.
    :param parents: ordered ``name -> event shape`` of the parents.
    :param flow: ``"nsf"`` (rational-quadratic splines) or ``"maf"`` (affine).
    :param transforms: number of flow layers.
    :param hidden_features: widths of each hyper-network's hidden layers.
    :param bins: spline bins (NSF only).
    :param affine: start the flow (data to noise) with a conditional affine step
        ``z = exp(a(pa)) x + b(pa)`` (its own hyper-network), so the flow layers shape
        the residual of a location-scale model; for additive-noise mechanisms.
    :param name: site name for error messages.
    :param support: "real", "positive" or "unit_interval" (see :class:`Mechanism`).

    Example::

        >>> import torch
        >>> mech = FlowMechanism(parents={"x": ()}, flow="nsf", hidden_features=(8,))
        >>> d = mech(x=torch.randn(5))
        >>> d.sample().shape, d.log_prob(torch.zeros(5)).shape
        (torch.Size([5]), torch.Size([5]))
    """

    def __init__(
        self,
        event_shape: int | Sequence[int] = (),
        parents: Mapping[str, Any] | Sequence[str] | None = None,
        flow: str = "nsf",
        transforms: int = 3,
        hidden_features: Sequence[int] = (64, 64),
        bins: int = 8,
        affine: bool = False,
        name: str | None = None,
        support: str | Any = "real",
    ) -> None:
        super().__init__(event_shape, parents, name, support)
        flow = flow.lower()
        kwargs: dict[str, Any] = {
            "features": self.features,
            "context": self.context_features,
            "transforms": transforms,
            "hidden_features": tuple(hidden_features),
        }
        if flow == "nsf":
            net = zuko.flows.NSF(bins=bins, **kwargs)
        elif flow == "maf":
            net = zuko.flows.MAF(**kwargs)
        else:
            raise ValueError(
                f"{self._label()}: unknown flow {flow!r}; use 'nsf' or 'maf'"
            )
        if affine:  # zuko's affine autoregressive layer first (data to noise)
            step = zuko.flows.MaskedAutoregressiveTransform(
                features=self.features,
                context=self.context_features,
                hidden_features=tuple(hidden_features),
            )
            net = zuko.flows.Flow([step, *net.transform.transforms], net.base)
        self.net = net
        self._config = {
            "flow": flow,
            "transforms": transforms,
            "hidden_features": tuple(hidden_features),
            "bins": bins,
            "affine": bool(affine),
        }

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, **self._config}

    def flow_transform(self, context: Tensor | None) -> Transform:
        return self.net.transform(context)


class NSFMechanism(FlowMechanism):
    """A neural spline flow mechanism (:class:`FlowMechanism` with ``flow="nsf"``).

    Example::

        >>> NSFMechanism(parents=["a", "b"])(torch.zeros(4), torch.ones(4)).batch_shape
        torch.Size([4])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("flow", None)
        super().__init__(*args, flow="nsf", **kwargs)


class MAFMechanism(FlowMechanism):
    """A masked affine autoregressive flow mechanism (``flow="maf"``).

    Example::

        >>> MAFMechanism(event_shape=(3,))().event_shape
        torch.Size([3])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("flow", None)
        super().__init__(*args, flow="maf", **kwargs)
