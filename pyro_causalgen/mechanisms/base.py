"""Common machinery of every mechanism: parents, context flattening, standardisation.

A mechanism is an :class:`torch.nn.Module` that, called with its parents' values,
returns a :class:`~pyro_causalgen.mechanisms.distribution.MechanismDistribution` for
its site. Parents of any event shape are flattened into one context vector; their
leading (plate, world) batch dims broadcast against each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import Transform

from pyro_causalgen.errors import ShapeError
from pyro_causalgen.mechanisms.distribution import (
    MechanismDistribution,
    ToNoiseTransform,
)

Shape = tuple[int, ...]

#: Supports a mechanism can have, by name; values live on them, flows on the reals.
SUPPORTS: dict[str, constraints.Constraint] = {
    "real": constraints.real,
    "positive": constraints.positive,
    "unit_interval": constraints.unit_interval,
}


def support_name(support: str | constraints.Constraint) -> str:
    """The name in :data:`SUPPORTS` of a support given by name or constraint."""
    if isinstance(support, str):
        if support not in SUPPORTS:
            raise ValueError(
                f"unknown support {support!r}; use one of {list(SUPPORTS)}"
            )
        return support
    base = support
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    for name, c in SUPPORTS.items():
        if type(base) is type(c) and repr(base) == repr(c):
            return name
    raise ValueError(
        f"no flow mechanism for support {support}; use one of {list(SUPPORTS)}"
    )


def _as_shape(shape: int | Sequence[int] | torch.Size) -> Shape:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


def _numel(shape: Shape) -> int:
    return math.prod(shape)


class Mechanism(nn.Module):
    """Base class: a conditional distribution ``p(x | parents)`` with a noise form.

    Subclasses implement :meth:`flow_transform`, the map from standardised data to
    standard normal noise given a standardised context.

    :param event_shape: the site's event shape: ``()`` scalar, ``(d,)`` vector.
    :param parents: ordered mapping ``name -> event shape`` of the parents (``()`` for a
        scalar parent); a sequence of names means scalar parents.
    :param name: the site name, used in error messages.
    :param support: ``"real"`` (default), ``"positive"`` or ``"unit_interval"`` (or the
        matching ``torch.distributions.constraints``): values are mapped onto it by
        ``biject_to(support)`` after the flow, which works on the reals.

    Example (a subclass; called with parent values it returns a distribution)::

        >>> from pyro_causalgen.mechanisms import NSFMechanism
        >>> mech = NSFMechanism(event_shape=(), parents={"x": ()}, name="y")
        >>> d = mech(x=torch.zeros(5))
        >>> d.batch_shape, d.event_shape, isinstance(mech, Mechanism)
        (torch.Size([5]), torch.Size([]), True)
    """

    def __init__(
        self,
        event_shape: int | Sequence[int] = (),
        parents: Mapping[str, int | Sequence[int]] | Sequence[str] | None = None,
        name: str | None = None,
        support: str | constraints.Constraint = "real",
    ) -> None:
        super().__init__()
        self.support = support_name(support)
        self._support = None if self.support == "real" else SUPPORTS[self.support]
        self._bijection = None if self._support is None else biject_to(self._support)
        self.event_shape: Shape = _as_shape(event_shape)
        if len(self.event_shape) > 1:
            raise ShapeError(
                f"{type(self).__name__} '{name}': event shape {self.event_shape} has "
                "more than one dim; flatten it or use an image mechanism"
            )
        if parents is None:
            parents = {}
        elif not isinstance(parents, Mapping):
            parents = {p: () for p in parents}
        self.parents: dict[str, Shape] = {k: _as_shape(v) for k, v in parents.items()}
        self.name = name
        self.features = _numel(self.event_shape)
        self.context_features = sum(_numel(s) for s in self.parents.values())
        self.register_buffer("value_loc", torch.zeros(self.event_shape))
        self.register_buffer("value_scale", torch.ones(self.event_shape))
        self.register_buffer("context_loc", torch.zeros(self.context_features))
        self.register_buffer("context_scale", torch.ones(self.context_features))
        self.register_buffer("_zero", torch.zeros(()))

    # ----------------------------------------------------------------- config
    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this mechanism (for save / load)."""
        return {
            "event_shape": self.event_shape,
            "parents": dict(self.parents),
            "name": self.name,
            "support": self.support,
        }

    def _label(self) -> str:
        return (
            f"{type(self).__name__} '{self.name}'" if self.name else type(self).__name__
        )

    # ---------------------------------------------------------------- context
    def _gather_parents(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        names = list(self.parents)
        if len(args) > len(names):
            raise ShapeError(
                f"{self._label()} takes {len(names)} parents {names} but got "
                f"{len(args)} positional values"
            )
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in self.parents:
                raise ShapeError(
                    f"{self._label()}: '{key}' is not a parent; parents are {names}"
                )
            if key in values:
                raise ShapeError(f"{self._label()}: parent '{key}' given twice")
            values[key] = value
        missing = [n for n in names if n not in values]
        if missing:
            raise ShapeError(f"{self._label()}: missing parent value(s) {missing}")
        return values

    def context(self, *args: Any, **kwargs: Any) -> Tensor | None:
        """Flatten parent values into one context, ``(*batch, context_features)``.

        Parents may be given positionally (in the order of ``parents``) or by name.
        Each parent's leading dims are batch dims; they broadcast against each other.

        :returns: the raw (unstandardised) context, or ``None`` for a root mechanism.
        """
        if not self.parents:
            if args or kwargs:
                raise ShapeError(f"{self._label()} has no parents but was given values")
            return None
        values = self._gather_parents(args, kwargs)
        ref = self._zero
        flat, batch_shapes = [], []
        for pname, shape in self.parents.items():
            v = values[pname]
            if not isinstance(v, Tensor):
                v = torch.as_tensor(v, dtype=ref.dtype, device=ref.device)
            if v.device != ref.device:
                raise ShapeError(
                    f"{self._label()}: parent '{pname}' is on {v.device} but the "
                    f"mechanism is on {ref.device}; move one of them"
                )
            k = len(shape)
            if v.dim() < k or tuple(v.shape[v.dim() - k :]) != shape:
                raise ShapeError(
                    f"{self._label()}: parent '{pname}' has shape {tuple(v.shape)}, "
                    f"expected (*batch, {', '.join(map(str, shape))})"
                    if shape
                    else f"{self._label()}: parent '{pname}' has shape "
                    f"{tuple(v.shape)}; expected a scalar event"
                )
            batch_shapes.append(v.shape[: v.dim() - k])
            flat.append(v.to(ref.dtype).reshape(*v.shape[: v.dim() - k], _numel(shape)))
        try:
            batch = torch.broadcast_shapes(*batch_shapes)
        except RuntimeError as err:
            shapes = {n: tuple(s) for n, s in zip(self.parents, batch_shapes)}
            raise ShapeError(
                f"{self._label()}: parent batch shapes {shapes} do not broadcast"
            ) from err
        return torch.cat([f.expand(*batch, f.shape[-1]) for f in flat], dim=-1)

    # --------------------------------------------------------- standardisation
    @torch.no_grad()
    def standardize_from(self, value: Tensor, context: Tensor | None = None) -> None:
        """Set the data and context standardisation from samples.

        :param value: observed values, ``(*batch, *event_shape)``, on the support
            (standardisation applies to their unconstrained image).
        :param context: the matching raw context from :meth:`context`.
        """
        if self._bijection is not None:
            value = self._bijection.inv(value)
        flat = value.reshape(-1, *self.event_shape).to(self.value_loc)
        self.value_loc.copy_(flat.mean(0))
        self.value_scale.copy_(_safe_std(flat))
        if context is not None and self.context_features:
            c = context.reshape(-1, self.context_features).to(self.context_loc)
            self.context_loc.copy_(c.mean(0))
            self.context_scale.copy_(_safe_std(c))

    # ----------------------------------------------------------------- forward
    def flow_transform(self, context: Tensor | None) -> Transform:
        """Transform from standardised data ``(*batch, features)`` to noise."""
        raise NotImplementedError

    def forward(self, *args: Any, **kwargs: Any) -> MechanismDistribution:
        """Return ``p(x | parents)`` as a :class:`MechanismDistribution`."""
        return self.at_context(self.context(*args, **kwargs))

    def at_context(self, context: Tensor | None) -> MechanismDistribution:
        """``p(x | parents)`` from an already flattened raw context ``(*batch, C)``.

        Counterfactual handlers use it to evaluate a mechanism on one world's slice of
        a world-indexed context.
        """
        std_ctx = (
            None
            if context is None
            else (context - self.context_loc) / self.context_scale
        )
        batch = () if context is None else tuple(context.shape[:-1])
        to_noise = ToNoiseTransform(
            self.value_loc,
            self.value_scale,
            self.flow_transform(std_ctx),
            len(self.event_shape),
            self._support,
        )
        zero = self._zero.expand(torch.Size((*batch, *self.event_shape)))
        base = dist.Normal(zero, torch.ones_like(zero)).to_event(len(self.event_shape))
        return MechanismDistribution(base, to_noise, mechanism=self, context=context)


def _safe_std(x: Tensor) -> Tensor:
    """Per-feature standard deviation, with 1 where a feature is constant."""
    if x.shape[0] < 2:
        return torch.ones_like(x[0])
    std = x.std(0)
    return torch.where(std > 1e-8 * (1 + x.abs().mean(0)), std, torch.ones_like(std))
