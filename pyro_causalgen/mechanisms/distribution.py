"""The distribution a mechanism returns: ``x = f(u; context)``, ``u`` standard noise.

:class:`MechanismDistribution` is a :class:`pyro.distributions.TransformedDistribution`
whose single transform maps noise to data, so it stands at any ``pyro.sample`` site and
every generic Pyro tool (``TransformReparam``, ``Predictive``, SVI) understands it. It
also exposes the two maps that counterfactual reasoning needs, :meth:`noise` (abduction,
exact inverse) and :meth:`from_noise` (prediction), and evaluates ``log_prob`` in one
pass of the flow.
"""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import Transform


class ToNoiseTransform(Transform):
    """Map data ``x`` to noise ``u``: unconstrain, standardise, apply a flow transform.

    ``u = t((b^{-1}(x) - loc) / scale)``, where ``b`` maps the real line onto the
    site's support (identity for real-valued sites) and ``t`` is a (zuko) transform
    acting on a trailing feature dim. Scalar sites (``event_dim == 0``) gain and lose a
    feature dim of size one around ``t``.

    :param loc: mean of the unconstrained data, shape ``event_shape``.
    :param scale: its standard deviation, shape ``event_shape``.
    :param flow: transform from standardised data to noise, event dim 1.
    :param event_dim: 0 for scalar sites, 1 for vector sites.
    :param support: the site's (elementwise) support, or ``None`` for the reals; it is
        reached by ``biject_to(support)``.

    Example (an affine flow ``t``; the inverse maps noise back to data)::

        >>> import zuko
        >>> t = ToNoiseTransform(torch.tensor(1.0), torch.tensor(2.0),
        ...                      zuko.transforms.IdentityTransform(), event_dim=0)
        >>> t(torch.tensor([3.0]))  # (3 - 1) / 2
        tensor([1.])
        >>> t.inv(torch.tensor([1.0]))
        tensor([3.])
    """

    bijective = True

    def __init__(
        self,
        loc: Tensor,
        scale: Tensor,
        flow: Transform,
        event_dim: int,
        support: constraints.Constraint | None = None,
    ):
        super().__init__(cache_size=0)
        self.loc, self.scale, self.flow = loc, scale, flow
        self._event_dim = event_dim
        self._support = support or constraints.real
        self.support = None if support is None else biject_to(support)

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(self._support, self._event_dim)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.real, self._event_dim)

    def _lift(self, z: Tensor) -> Tensor:
        return z.unsqueeze(-1) if self._event_dim == 0 else z

    def _drop(self, z: Tensor) -> Tensor:
        return z.squeeze(-1) if self._event_dim == 0 else z

    def _log_scale(self) -> Tensor:
        log_scale = self.scale.log()
        return log_scale.sum() if self._event_dim else log_scale

    def _unconstrain(self, x: Tensor) -> tuple[Tensor, Tensor | float]:
        """``b^{-1}(x)`` and ``log|d b^{-1}(x) / dx|`` summed over the event."""
        if self.support is None:
            return x, 0.0
        z = self.support.inv(x)
        ladj = -self.support.log_abs_det_jacobian(z, x)
        return z, ladj.sum(-1) if self._event_dim else ladj

    def _call(self, x: Tensor) -> Tensor:
        z = self._unconstrain(x)[0]
        return self._drop(self.flow(self._lift((z - self.loc) / self.scale)))

    def _inverse(self, u: Tensor) -> Tensor:
        z = self.loc + self.scale * self._drop(self.flow.inv(self._lift(u)))
        return z if self.support is None else self.support(z)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``u`` and ``log|du/dx|`` (summed over the event) in one flow pass."""
        z, ladj_support = self._unconstrain(x)
        u, ladj = self.flow.call_and_ladj(self._lift((z - self.loc) / self.scale))
        return self._drop(u), ladj - self._log_scale() + ladj_support

    def log_abs_det_jacobian(self, x: Tensor, u: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]


class MechanismDistribution(dist.TransformedDistribution):
    """``x = to_noise^{-1}(u)``, ``u ~ base``: a mechanism evaluated at one context.

    :param base: standard noise distribution with the site's batch and event shape.
    :param to_noise: bijection from data to noise (event dim = the site's event dim).
    :param mechanism: the module that produced this distribution (for introspection).
    :param context: the flattened, unstandardised parent values, ``(*batch, C)``.

    Example::

        >>> from pyro_causalgen.mechanisms import LocScaleMechanism
        >>> d = LocScaleMechanism(parents={"x": ()})(x=torch.zeros(3))
        >>> u = torch.randn(3)
        >>> torch.allclose(d.noise(d.from_noise(u)), u, atol=1e-6)
        True
    """

    arg_constraints: dict = {}

    def __init__(
        self,
        base: dist.TorchDistribution,
        to_noise: ToNoiseTransform,
        mechanism: Any = None,
        context: Tensor | None = None,
        validate_args: bool | None = None,
    ):
        self.to_noise = to_noise
        self.mechanism = mechanism
        self.context = context
        super().__init__(base, [to_noise.inv], validate_args=validate_args)

    def noise(self, x: Tensor) -> Tensor:
        """Abduction: the exact noise ``u`` that produces ``x`` under this context."""
        return self.to_noise(x)

    def from_noise(self, u: Tensor) -> Tensor:
        """Prediction: the value this mechanism produces from noise ``u``."""
        return self.to_noise.inv(u)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        u, ladj = self.to_noise.call_and_ladj(value)
        return self.base_dist.log_prob(u) + ladj

    def expand(self, batch_shape, _instance=None):  # type: ignore[override]
        new = self._get_checked_instance(MechanismDistribution, _instance)
        batch_shape = torch.Size(batch_shape)
        base = self.base_dist.expand(batch_shape)
        new.to_noise, new.mechanism, new.context = (
            self.to_noise,
            self.mechanism,
            self.context,
        )
        dist.TransformedDistribution.__init__(
            new, base, [self.to_noise.inv], validate_args=False
        )
        new._validate_args = self._validate_args
        return new
