"""Discrete mechanisms: categorical and binary sites with neural logits of the parents.

``CategoricalMechanism`` returns ``Categorical(logits=net(parents))`` and
``BernoulliMechanism`` returns ``Bernoulli(logits=net(parents))``: plain Pyro
distributions with exact ``log_prob``, so they stand at ``pyro.sample`` and are fitted
by :func:`~pyro_causalgen.fit`. Their exogenous noise is the Gumbel-max one (Oberst &
Sontag, 2019, "Counterfactual off-policy evaluation with Gumbel-max structural causal
models"): ``x = argmax_k(logits_k + g_k)`` with iid standard Gumbel ``g``, which the
counterfactual handlers share across worlds, and whose posterior given an observed
category is the truncated-Gumbel law
(:func:`pyro_causalgen.handlers.noise.truncated_gumbel_posterior`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyro.distributions as dist
import torch
import zuko
from torch import Tensor, nn

from pyro_causalgen.errors import ShapeError
from pyro_causalgen.mechanisms.base import Mechanism


class _LogitsMechanism(Mechanism):
    """Shared part: a (zero-hidden-layer: linear) network from parents to logits."""

    def __init__(
        self,
        outputs: int,
        parents: Mapping[str, Any] | Sequence[str] | None,
        hidden_features: Sequence[int],
        name: str | None,
    ) -> None:
        super().__init__((), parents, name)
        self.hidden_features = tuple(hidden_features)
        c = self.context_features
        self.net: nn.Module | None = (
            zuko.nn.MLP(c, outputs, hidden_features=self.hidden_features) if c else None
        )
        self.bias = nn.Parameter(torch.zeros(outputs)) if c == 0 else None

    def logits(self, *args: Any, **kwargs: Any) -> Tensor:
        """Logits ``(*batch, outputs)`` from the parents (standardised context)."""
        ctx = self.context(*args, **kwargs)
        if ctx is None:
            assert self.bias is not None
            return self.bias
        assert self.net is not None
        return self.net((ctx - self.context_loc) / self.context_scale)

    @torch.no_grad()
    def standardize_from(self, value: Tensor, context: Tensor | None = None) -> None:
        """Set only the context standardisation (values are categories)."""
        if context is not None and self.context_features:
            c = context.reshape(-1, self.context_features).to(self.context_loc)
            self.context_loc.copy_(c.mean(0))
            std = c.std(0) if c.shape[0] > 1 else torch.ones_like(c[0])
            self.context_scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))


class CategoricalMechanism(_LogitsMechanism):
    """``x ~ Categorical(softmax(net(parents)))`` with Gumbel-max noise.

    :param num_categories: number of categories ``K`` (values ``0..K-1``).
    :param parents: ordered ``name -> event shape`` of the parents.
    :param hidden_features: hidden widths of the logits network (``()``: linear).
    :param name: site name for error messages.

    Example::

        >>> mech = CategoricalMechanism(3, parents={"x": ()})
        >>> d = mech(x=torch.zeros(5))
        >>> d.sample().shape, d.log_prob(torch.zeros(5, dtype=torch.long)).shape
        (torch.Size([5]), torch.Size([5]))
    """

    def __init__(
        self,
        num_categories: int,
        parents: Mapping[str, Any] | Sequence[str] | None = None,
        hidden_features: Sequence[int] = (),
        name: str | None = None,
    ) -> None:
        if num_categories < 2:
            raise ShapeError(
                f"CategoricalMechanism '{name}': needs at least 2 categories, "
                f"got {num_categories}"
            )
        super().__init__(num_categories, parents, hidden_features, name)
        self.num_categories = num_categories

    @property
    def config(self) -> dict[str, Any]:
        return {
            "num_categories": self.num_categories,
            "parents": dict(self.parents),
            "hidden_features": self.hidden_features,
            "name": self.name,
        }

    def forward(self, *args: Any, **kwargs: Any) -> dist.Categorical:  # type: ignore[override]
        """Return ``p(x | parents)`` as a ``Categorical`` over ``0..K-1``."""
        return dist.Categorical(logits=self.logits(*args, **kwargs))


class IndexBernoulli(dist.Bernoulli):
    """A ``Bernoulli`` that also scores integer-typed values (``0`` / ``1`` as long),
    as data preparation keeps discrete columns as category indices.

    Example::

        >>> IndexBernoulli(logits=torch.zeros(2)).log_prob(torch.tensor([0, 1])).shape
        torch.Size([2])
    """

    def log_prob(self, value: Tensor) -> Tensor:
        if not value.is_floating_point():
            value = value.to(self.logits.dtype)
        return super().log_prob(value)


class BernoulliMechanism(_LogitsMechanism):
    """``x ~ Bernoulli(sigmoid(net(parents)))``: two-category Gumbel-max noise.

    :param parents: ordered ``name -> event shape`` of the parents.
    :param hidden_features: hidden widths of the logits network (``()``: linear).
    :param name: site name for error messages.

    Example::

        >>> mech = BernoulliMechanism(parents=["x"])
        >>> mech(torch.zeros(4)).sample().tolist()[:1] in ([0.0], [1.0])
        True
    """

    def __init__(
        self,
        parents: Mapping[str, Any] | Sequence[str] | None = None,
        hidden_features: Sequence[int] = (),
        name: str | None = None,
    ) -> None:
        super().__init__(1, parents, hidden_features, name)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "parents": dict(self.parents),
            "hidden_features": self.hidden_features,
            "name": self.name,
        }

    def forward(self, *args: Any, **kwargs: Any) -> IndexBernoulli:  # type: ignore[override]
        """Return ``p(x | parents)`` as a ``Bernoulli`` over ``{0., 1.}``."""
        return IndexBernoulli(logits=self.logits(*args, **kwargs).squeeze(-1))
