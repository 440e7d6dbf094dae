"""Noise representations: every mechanism site written as ``x = f(u; params)``.

Counterfactual handlers share each site's exogenous noise ``u`` across worlds, so they
need, for the distribution found at a site, the law of ``u`` and the two maps

- prediction ``x = f(u)``, evaluated per world with that world's parameters, and
- abduction ``u = f^{-1}(x)`` (exact, where ``f`` is invertible) or a draw from the
  posterior ``p(u | x)`` (discrete sites, where ``f`` is not invertible).

:func:`noise_form` returns such a :class:`NoiseForm` for

- :class:`~pyro_causalgen.mechanisms.MechanismDistribution` (flows, location-scale),
- location-scale families: ``Normal``, ``Laplace``, ``Cauchy``, ``Gumbel``, ``Uniform``,
  ``Exponential`` and ``MultivariateNormal``, with parameters that may depend on the
  parents,
- any ``TransformedDistribution`` whose base has a noise form and whose transforms are
  bijective (``LogNormal``, Pyro's conditional splines and couplings, zuko flows),
- ``Independent`` and expanded versions of all these,
- ``Categorical`` and ``Bernoulli`` with Gumbel-max noise (Oberst & Sontag, 2019).

Any other distribution raises :class:`NoiseRepresentationError` naming the site.

Shapes: a form's ``batch_shape`` is the site's batch shape, which may include world
dims on the left of the plates; ``u`` has the site's batch shape without world dims
plus ``noise_event_shape``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import (
    ExpandedDistribution,
    MaskedDistribution,
)
from torch import Tensor
from torch.distributions import transforms as T

from pyro_causalgen.errors import (
    NoiseRepresentationError,
)
from pyro_causalgen.mechanisms.base import Mechanism
from pyro_causalgen.mechanisms.distribution import (
    MechanismDistribution,
    ToNoiseTransform,
)
from pyro_causalgen.mechanisms.spline import RQSFlowTransform

Index = slice


def noise_site_name(name: str) -> str:
    """Name of the sample site that holds the exogenous noise of site ``name``.

    Example::

        >>> noise_site_name("y")
        'u(y)'
    """
    return f"u({name})"


# ----------------------------------------------------------------- tensor helpers
def size_at(t: Tensor | None, pos: int) -> int:
    """Size of ``t`` at the negative dim ``pos``, 1 if ``t`` has fewer dims."""
    if t is None or t.dim() < -pos:
        return 1
    return int(t.shape[pos])


def take(t: Tensor, pos: int, index: Index) -> Tensor:
    """``t[..., index, ...]`` at negative dim ``pos`` keeping the dim; size-1 dims and
    missing dims are left alone (they broadcast)."""
    if t.dim() < -pos or t.shape[pos] == 1:
        return t
    return t[(Ellipsis, index) + (slice(None),) * (-pos - 1)]


def _ref(*tensors: Any) -> Tensor:
    for t in tensors:
        if isinstance(t, Tensor):
            return t
    return torch.zeros(())


def _standard(kind: str, ref: Tensor, shape: torch.Size) -> dist.TorchDistribution:
    zero = torch.zeros((), dtype=ref.dtype, device=ref.device).expand(shape)
    one = torch.ones((), dtype=ref.dtype, device=ref.device).expand(shape)
    if kind == "normal":
        return dist.Normal(zero, one)
    if kind == "laplace":
        return dist.Laplace(zero, one)
    if kind == "cauchy":
        return dist.Cauchy(zero, one)
    if kind == "gumbel":
        return dist.Gumbel(zero, one)
    if kind == "uniform":
        return dist.Uniform(zero, one)
    if kind == "exponential":
        return dist.Exponential(one)
    raise ValueError(f"unknown standard noise {kind!r}")


# ----------------------------------------------------------------------- forms
class NoiseForm:
    """``x = f(u; params)``, ``u`` standard noise: one site's mechanism, all worlds.

    :param batch_shape: the site's batch shape (plates, and world dims where the
        parameters are world-indexed).
    :param event_dim: number of event dims of ``x``.
    :param noise_event_shape: event shape of ``u``.
    :param invertible: whether :meth:`abduct` exists (else :meth:`posterior_sample`).

    Example::

        >>> form = noise_form(dist.Normal(torch.tensor([1.0, 2.0]), 3.0), "x")
        >>> u, log_px = form.abduct(torch.tensor([4.0, 2.0]))
        >>> u.tolist(), form.predict(u).tolist()
        ([1.0, 0.0], [4.0, 2.0])
    """

    invertible: bool = True
    discrete: bool = False

    def __init__(
        self,
        batch_shape: torch.Size,
        event_dim: int,
        noise_event_shape: torch.Size,
        ref: Tensor,
    ) -> None:
        self.batch_shape = torch.Size(batch_shape)
        self.event_dim = event_dim
        self.noise_event_shape = torch.Size(noise_event_shape)
        self.ref = ref

    # to override ---------------------------------------------------------------
    def noise_dist(self, batch_shape: torch.Size) -> dist.TorchDistribution:
        """The law of ``u``: standard noise with ``batch_shape`` (no world dims)."""
        raise NotImplementedError

    def predict(self, u: Tensor) -> Tensor:
        """``x = f(u)``; ``u`` broadcasts against the (world-indexed) parameters."""
        raise NotImplementedError

    def abduct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, log p(x))`` with ``u = f^{-1}(x)`` (invertible forms only)."""
        raise NotImplementedError

    def posterior_sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u ~ p(u | x), log p(x))`` (non-invertible forms only)."""
        raise NotImplementedError

    def world_size(self, pos: int) -> int | None:
        """Size of the parameters at batch dim ``pos``; ``None`` if unknown."""
        return None

    def select(self, pos: int, index: Index) -> NoiseForm | None:
        """The form restricted to ``index`` along batch dim ``pos``, or ``None`` when
        the parameters cannot be sliced (callers then evaluate every world)."""
        return None

    # shared --------------------------------------------------------------------
    @property
    def value_dtype(self) -> torch.dtype:
        return self.ref.dtype


class LocScaleForm(NoiseForm):
    """``x = loc + scale * u`` elementwise, ``u`` from a standard family."""

    def __init__(self, kind: str, loc: Tensor, scale: Tensor, batch_shape: torch.Size):
        self.kind, self.loc, self.scale = kind, loc, scale
        super().__init__(batch_shape, 0, torch.Size(), _ref(loc, scale))

    def noise_dist(self, batch_shape: torch.Size) -> dist.TorchDistribution:
        return _standard(self.kind, self.ref, torch.Size(batch_shape))

    def predict(self, u: Tensor) -> Tensor:
        return self.loc + self.scale * u

    def abduct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = (x - self.loc) / self.scale
        lp = _standard(self.kind, self.ref, u.shape).log_prob(u) - self.scale.log()
        return u, lp

    def world_size(self, pos: int) -> int:
        return max(size_at(self.loc, pos), size_at(self.scale, pos))

    def select(self, pos: int, index: Index) -> LocScaleForm:
        loc, scale = take(self.loc, pos, index), take(self.scale, pos, index)
        shape = torch.broadcast_shapes(loc.shape, scale.shape)
        return LocScaleForm(self.kind, loc, scale, shape)


class MultivariateNormalForm(NoiseForm):
    """``x = loc + L u``, ``u ~ N(0, I)``, ``L`` the Cholesky factor."""

    def __init__(self, loc: Tensor, scale_tril: Tensor) -> None:
        self.loc, self.tril = loc, scale_tril
        batch = torch.broadcast_shapes(loc.shape[:-1], scale_tril.shape[:-2])
        super().__init__(batch, 1, loc.shape[-1:], loc)

    def noise_dist(self, batch_shape: torch.Size) -> dist.TorchDistribution:
        shape = torch.Size(batch_shape) + self.noise_event_shape
        return _standard("normal", self.ref, shape).to_event(1)

    def predict(self, u: Tensor) -> Tensor:
        return self.loc + (self.tril @ u.unsqueeze(-1)).squeeze(-1)

    def abduct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        diff = (x - self.loc).unsqueeze(-1)
        batch = torch.broadcast_shapes(diff.shape[:-2], self.tril.shape[:-2])
        tril = self.tril.expand(*batch, *self.tril.shape[-2:])
        diff = diff.expand(*batch, *diff.shape[-2:])
        u = torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1)
        log_det = self.tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        lp = -0.5 * (u**2).sum(-1) - 0.5 * u.shape[-1] * math.log(2 * math.pi) - log_det
        return u, lp

    def world_size(self, pos: int) -> int:
        return max(size_at(self.loc, pos - 1), size_at(self.tril, pos - 2))

    def select(self, pos: int, index: Index) -> MultivariateNormalForm:
        return MultivariateNormalForm(
            take(self.loc, pos - 1, index), take(self.tril, pos - 2, index)
        )


class MechanismForm(NoiseForm):
    """A :class:`MechanismDistribution`: ``x = to_noise^{-1}(u)``, ``u ~ N(0, I)``.

    When the flow evaluates its hyper-networks lazily (zuko autoregressive transforms
    of vector sites), worlds are sliced through the mechanism's context, so abduction
    costs one flow pass over the factual rows only. When the parameters are already
    evaluated for every world (scalar zuko flows, stacked flows, location-scale),
    :meth:`select` declines and the handler reuses them for all worlds at once rather
    than evaluating the hyper-networks again.
    """

    def __init__(self, fn: MechanismDistribution) -> None:
        self.fn = fn
        super().__init__(
            fn.batch_shape, len(fn.event_shape), fn.event_shape, _mechanism_ref(fn)
        )

    def noise_dist(self, batch_shape: torch.Size) -> dist.TorchDistribution:
        shape = torch.Size(batch_shape) + self.noise_event_shape
        return _standard("normal", self.ref, shape).to_event(self.event_dim)

    def predict(self, u: Tensor) -> Tensor:
        return self.fn.from_noise(u)

    def abduct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # flows whose parameters carry the context's batch dims (e.g. MAF's affine
        # layers) need the value broadcast to them before ``log_abs_det_jacobian``
        full = self.fn.batch_shape + self.fn.event_shape
        x = x.expand(torch.broadcast_shapes(x.shape, full))
        u, ladj = self.fn.to_noise.call_and_ladj(x)
        lp = _sum_rightmost(dist.Normal(0.0, 1.0).log_prob(u), self.event_dim)
        return u, lp + ladj

    def _sliceable(self) -> bool:
        """Whether to re-evaluate the mechanism on a world's slice of the context.

        True for mechanisms with their own ``at_context`` (e.g. image flows) and for
        lazily evaluated flows; eagerly evaluated flows have their parameters sliced.
        """
        mech = self.fn.mechanism
        if not isinstance(mech, Mechanism) or self.fn.context is None:
            return False
        if type(mech).at_context is not Mechanism.at_context:
            return True
        return _lazy(self.fn.to_noise.flow)

    def world_size(self, pos: int) -> int | None:
        if self.fn.context is None:
            return 1
        if isinstance(self.fn.mechanism, Mechanism):
            return size_at(self.fn.context, pos - 1)
        return None

    def select(self, pos: int, index: Index) -> MechanismForm | None:
        ctx = self.fn.context
        if ctx is None:
            return self
        if self._sliceable():  # lazy hyper-networks: evaluate on the slice only
            sliced = take(ctx, pos - 1, index)
            return MechanismForm(self.fn.mechanism.at_context(sliced))
        # parameters already evaluated for every world: slice them
        batch = ctx.shape[:-1]
        if len(batch) < -pos or not hasattr(self.fn.to_noise, "flow"):
            return None
        found: list[bool] = []
        flow = _slice_params(
            self.fn.to_noise.flow, batch, len(batch) + pos, index, found
        )
        if flow is None or not any(found):
            return None
        tn = self.fn.to_noise
        support = None if tn.support is None else tn._support
        to_noise = ToNoiseTransform(tn.loc, tn.scale, flow, tn._event_dim, support)
        sliced = take(ctx, pos - 1, index)
        shape = sliced.shape[:-1] + self.fn.event_shape
        zero = torch.zeros((), dtype=self.ref.dtype, device=self.ref.device).expand(
            shape
        )
        base = dist.Normal(zero, torch.ones_like(zero)).to_event(self.event_dim)
        new = MechanismDistribution(base, to_noise, self.fn.mechanism, sliced)
        return MechanismForm(new)


def _slice_params(
    obj: Any, batch: torch.Size, dim: int, index: Index, found: list[bool]
) -> Any:
    """A copy of transform ``obj`` with every parameter tensor whose leading dims are
    ``batch`` sliced with ``index`` at dim ``dim``; ``None`` if ``obj`` holds something
    that cannot be walked (a callable that would evaluate parameters later)."""
    if isinstance(obj, Tensor):
        if obj.dim() >= len(batch) and obj.shape[: len(batch)] == batch:
            found.append(True)
            return obj[(slice(None),) * dim + (index,)]
        return obj
    if isinstance(obj, (tuple, list)):
        items = [_slice_params(o, batch, dim, index, found) for o in obj]
        if any(i is None for i, o in zip(items, obj) if o is not None):
            return None
        return type(obj)(items)
    if isinstance(obj, RQSFlowTransform):  # knot tables are (L, *batch, 3, K + 1)
        table = obj.table
        if table.shape[1 : 1 + len(batch)] == batch:
            found.append(True)
            return RQSFlowTransform(table[(slice(None),) * (dim + 1) + (index,)])
        return obj
    if isinstance(obj, T.Transform):
        new = copy.copy(obj)
        for key, value in vars(obj).items():
            if key.startswith("_cached") or key == "_inv":
                continue
            if callable(value) and not isinstance(value, (T.Transform, Tensor)):
                return None
            if isinstance(value, (Tensor, T.Transform, tuple, list)):
                sliced = _slice_params(value, batch, dim, index, found)
                if sliced is None:
                    return None
                object.__setattr__(new, key, sliced)
        if "_cached_x_y" in vars(new):
            new._cached_x_y = (None, None)
        if "_inv" in vars(new):
            new._inv = None
        return new
    return obj


def _lazy(flow: T.Transform) -> bool:
    """Whether ``flow`` evaluates hyper-networks when called (zuko autoregressive)."""
    if type(flow).__name__ == "ComposedTransform":
        return any(_lazy(p) for p in flow.transforms)
    return type(flow).__name__ == "AutoregressiveTransform"


def _mechanism_ref(fn: MechanismDistribution) -> Tensor:
    mech = fn.mechanism
    if isinstance(mech, Mechanism):
        return mech._zero
    return fn.base_dist.sample() if fn.context is None else fn.context


_PARAM_FREE = (
    T.ExpTransform,
    T.SigmoidTransform,
    T.TanhTransform,
    T.SoftplusTransform,
    T.PowerTransform,
)


def _select_transform(t: T.Transform, pos: int, index: Index) -> T.Transform | None:
    """``t`` restricted along batch dim ``pos`` where its parameters can be sliced."""
    if isinstance(t, T.ComposeTransform):
        parts = [_select_transform(p, pos, index) for p in t.parts]
        return None if any(p is None for p in parts) else T.ComposeTransform(parts)
    if isinstance(t, T._InverseTransform):
        inner = _select_transform(t._inv, pos, index)
        return None if inner is None else inner.inv
    if isinstance(t, T.PowerTransform):
        return T.PowerTransform(take(t.exponent, pos - t.domain.event_dim, index))
    if isinstance(t, _PARAM_FREE):
        return t
    if isinstance(t, T.AffineTransform):
        p = pos - t.event_dim
        loc = take(t.loc, p, index) if isinstance(t.loc, Tensor) else t.loc
        scale = take(t.scale, p, index) if isinstance(t.scale, Tensor) else t.scale
        return T.AffineTransform(loc, scale, event_dim=t.event_dim)
    return None


def _transform_size(t: T.Transform, pos: int) -> int | None:
    if isinstance(t, T.ComposeTransform):
        sizes = [_transform_size(p, pos) for p in t.parts]
        return None if any(s is None for s in sizes) else max(sizes, default=1)  # type: ignore[type-var]
    if isinstance(t, T._InverseTransform):
        return _transform_size(t._inv, pos)
    if isinstance(t, T.PowerTransform):
        return size_at(t.exponent, pos - t.domain.event_dim)
    if isinstance(t, _PARAM_FREE):
        return 1
    if isinstance(t, T.AffineTransform):
        params = [p for p in (t.loc, t.scale) if isinstance(p, Tensor)]
        return max((size_at(p, pos - t.event_dim) for p in params), default=1)
    return None


class TransformedForm(NoiseForm):
    """``x = t_n(...t_1(b))`` with ``b = f_base(u)``: a base form and bijections."""

    def __init__(
        self,
        base: NoiseForm,
        transforms: list[T.Transform],
        batch_shape: torch.Size,
        event_dim: int,
    ):
        self.base, self.transforms = base, list(transforms)
        self.base_event_dim = base.event_dim
        super().__init__(batch_shape, event_dim, base.noise_event_shape, base.ref)
        self.invertible = base.invertible
        self.discrete = base.discrete

    def noise_dist(self, batch_shape: torch.Size) -> dist.TorchDistribution:
        return self.base.noise_dist(batch_shape)

    def predict(self, u: Tensor) -> Tensor:
        x = self.base.predict(u)
        for t in self.transforms:
            x = t(x)
        return x

    def abduct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ladj: Tensor | int = 0
        event_dim = self.event_dim
        y = x
        for t in reversed(self.transforms):  # as TransformedDistribution.log_prob
            x = t.inv(y)
            event_dim += t.domain.event_dim - t.codomain.event_dim
            term = t.log_abs_det_jacobian(x, y)
            ladj = ladj + _sum_rightmost(term, event_dim - t.domain.event_dim)
            y = x
        u, lp = self.base.abduct(y)
        return u, _sum_rightmost(lp, event_dim - self.base_event_dim) - ladj

    def world_size(self, pos: int) -> int | None:
        sizes = [_transform_size(t, pos) for t in self.transforms]
        base = self.base.world_size(pos)
        if base is None or any(s is None for s in sizes):
            return None
        return max([base, *sizes])  # type: ignore[list-item]

    def select(self, pos: int, index: Index) -> TransformedForm | None:
        base = self.base.select(pos, index)
        ts = [_select_transform(t, pos, index) for t in self.transforms]
        if base is None or any(t is None for t in ts):
            return None
        return TransformedForm(base, ts, base.batch_shape, self.event_dim)  # type: ignore[arg-type]


class IndependentForm(NoiseForm):
    """``Independent(base, k)``: the base form with ``k`` more event dims."""

    def __init__(self, base: NoiseForm, k: int, batch_shape: torch.Size) -> None:
        self.base, self.k = base, k
        bb = base.batch_shape
        noise_event = bb[len(bb) - k :] + base.noise_event_shape if k else ()
        super().__init__(
            batch_shape, base.event_dim + k, torch.Size(noise_event), base.ref
        )
        self.invertible, self.discrete = base.invertible, base.discrete

    def noise_dist(self, batch_shape: torch.Size) -> dist.TorchDistribution:
        k = self.k
        inner_batch = (
            torch.Size(batch_shape)
            + self.base.batch_shape[len(self.base.batch_shape) - k :]
        )
        return self.base.noise_dist(inner_batch).to_event(k)

    def predict(self, u: Tensor) -> Tensor:
        return self.base.predict(u)

    def abduct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u, lp = self.base.abduct(x)
        return u, _sum_rightmost(lp, self.k)

    def posterior_sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u, lp = self.base.posterior_sample(x)
        return u, _sum_rightmost(lp, self.k)

    def world_size(self, pos: int) -> int | None:
        return self.base.world_size(pos - self.k)

    def select(self, pos: int, index: Index) -> IndependentForm | None:
        base = self.base.select(pos - self.k, index)
        if base is None:
            return None
        return IndependentForm(
            base, self.k, base.batch_shape[: len(base.batch_shape) - self.k]
        )

    @property
    def value_dtype(self) -> torch.dtype:
        return self.base.value_dtype


class CategoricalForm(NoiseForm):
    """Gumbel-max: ``x = argmax_k(logits_k + g_k)``, ``g_k ~ Gumbel(0, 1)`` iid.

    Not invertible: given ``x = k`` the noise posterior is the truncated-Gumbel law of
    Oberst & Sontag (2019), sampled exactly by :meth:`posterior_sample`.
    """

    invertible = False
    discrete = True

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits
        super().__init__(logits.shape[:-1], 0, logits.shape[-1:], logits)

    @property
    def value_dtype(self) -> torch.dtype:
        return torch.long

    def noise_dist(self, batch_shape: torch.Size) -> dist.TorchDistribution:
        shape = torch.Size(batch_shape) + self.noise_event_shape
        return _standard("gumbel", self.ref, shape).to_event(1)

    def predict(self, u: Tensor) -> Tensor:
        return (self.logits + u).argmax(-1)

    def posterior_sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return truncated_gumbel_posterior(self.logits, x)

    def world_size(self, pos: int) -> int:
        return size_at(self.logits, pos - 1)

    def select(self, pos: int, index: Index) -> CategoricalForm:
        return CategoricalForm(take(self.logits, pos - 1, index))


class BernoulliForm(NoiseForm):
    """``x = 1[v < sigmoid(logits)]``, ``v ~ Uniform(0, 1)``.

    This is the two-category Gumbel-max mechanism written with one uniform noise
    (``v = sigmoid(g_0 - g_1)``): the coupling, and so every counterfactual, is the
    same. Given ``x`` the noise posterior is uniform on ``(0, p)`` or ``(p, 1)``.
    """

    invertible = False
    discrete = True

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits
        super().__init__(logits.shape, 0, torch.Size(), logits)

    def noise_dist(self, batch_shape: torch.Size) -> dist.TorchDistribution:
        return _standard("uniform", self.ref, torch.Size(batch_shape))

    def predict(self, u: Tensor) -> Tensor:
        return (u < torch.sigmoid(self.logits)).to(self.ref.dtype)

    def posterior_sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = torch.sigmoid(self.logits)
        shape = torch.broadcast_shapes(p.shape, x.shape)
        p, x = p.expand(shape), x.expand(shape)
        v = torch.rand(shape, dtype=p.dtype, device=p.device)
        u = torch.where(x > 0.5, v * p, p + v * (1 - p))
        lp = torch.where(x > 0.5, F.logsigmoid(self.logits), F.logsigmoid(-self.logits))
        return u, lp.expand(shape)

    def world_size(self, pos: int) -> int:
        return size_at(self.logits, pos)

    def select(self, pos: int, index: Index) -> BernoulliForm:
        return BernoulliForm(take(self.logits, pos, index))


def truncated_gumbel_posterior(logits: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Draw Gumbel noise ``g`` with ``argmax(logits + g) = x``; return it, ``log p(x)``.

    The maximum of the perturbed logits is ``Gumbel(logsumexp(logits))``; each other
    perturbed logit is a ``Gumbel(logits_j)`` truncated below that maximum (Maddison
    et al., 2014; Oberst & Sontag, 2019).

    :param logits: ``(*batch, K)`` unnormalised log-probabilities.
    :param x: ``(*batch)`` observed categories.
    :returns: noise ``(*batch, K)`` and ``log p(x)`` of shape ``(*batch)``.

    Example::

        >>> x = torch.tensor([0, 1, 2, 2])
        >>> g, lp = truncated_gumbel_posterior(torch.zeros(4, 3), x)
        >>> (torch.zeros(4, 3) + g).argmax(-1).tolist()
        [0, 1, 2, 2]
    """
    batch = torch.broadcast_shapes(logits.shape[:-1], x.shape)
    logits = logits.expand(*batch, logits.shape[-1])
    x = x.long().expand(batch)
    log_z = logits.logsumexp(-1)
    onehot = F.one_hot(x, logits.shape[-1]).bool()
    gumbel = dist.Gumbel(torch.zeros_like(logits), torch.ones_like(logits)).sample()
    top = log_z + dist.Gumbel(torch.zeros_like(log_z), torch.ones_like(log_z)).sample()
    perturbed = logits + gumbel
    # Gumbel(logits_j) truncated to (-inf, top]:  -log(exp(-top) + exp(-perturbed))
    trunc = -torch.logaddexp(-top.unsqueeze(-1), -perturbed)
    values = torch.where(onehot, top.unsqueeze(-1).expand_as(logits), trunc)
    log_px = (logits - log_z.unsqueeze(-1)).gather(-1, x.unsqueeze(-1)).squeeze(-1)
    return values - logits, log_px


# -------------------------------------------------------------------- dispatch
def size_at_shape(shape: torch.Size, pos: int) -> int:
    return 1 if len(shape) < -pos else int(shape[pos])


def _drop_at(shape: torch.Size, pos: int) -> torch.Size:
    out = list(shape)
    out[pos] = 1
    return torch.Size(out)


def _sum_rightmost(t: Tensor, k: int) -> Tensor:
    return t.reshape(t.shape[: t.dim() - k] + (-1,)).sum(-1) if k > 0 else t


def _loc_scale(
    kind: str, loc: Tensor, scale: Tensor, batch: torch.Size
) -> LocScaleForm:
    return LocScaleForm(kind, loc, scale, batch)


class ZukoFlowForm(NoiseForm):
    """A zuko ``NormalizingFlow``: ``x = transform^{-1}(z)``, ``z = f_base(u)``."""

    def __init__(self, fn: Any, base: NoiseForm) -> None:
        self.fn, self.base = fn, base
        super().__init__(
            fn.batch_shape, len(fn.event_shape), base.noise_event_shape, base.ref
        )

    def noise_dist(self, batch_shape: torch.Size) -> dist.TorchDistribution:
        return self.base.noise_dist(batch_shape)

    def predict(self, u: Tensor) -> Tensor:
        return self.fn.transform.inv(self.base.predict(u))

    def abduct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, ladj = self.fn.transform.call_and_ladj(x)
        u, lp = self.base.abduct(z)
        return u, lp + ladj


def noise_form(fn: Any, name: str | None = None) -> NoiseForm:
    """The noise representation of the distribution ``fn`` found at site ``name``.

    :param fn: a Pyro / torch distribution.
    :param name: the site name, for the error message.
    :raises NoiseRepresentationError: naming the site and the distribution when
        ``fn`` has no representation ``x = f(u; params)`` with shared noise.

    Example::

        >>> form = noise_form(dist.LogNormal(0.0, 1.0), "w")
        >>> float(form.predict(torch.tensor(0.0)))
        1.0
    """
    site = f"site '{name}'" if name is not None else "a site"
    batch = torch.Size(fn.batch_shape) if hasattr(fn, "batch_shape") else torch.Size()
    if isinstance(fn, MaskedDistribution):
        return noise_form(fn.base_dist, name)
    if isinstance(fn, ExpandedDistribution):
        inner = noise_form(fn.base_dist, name)
        inner.batch_shape = batch
        return inner
    if isinstance(fn, MechanismDistribution):
        return MechanismForm(fn)
    if isinstance(fn, dist.Independent):
        base = noise_form(fn.base_dist, name)
        return IndependentForm(base, fn.reinterpreted_batch_ndims, batch)
    if type(fn) in (dist.Normal, torch.distributions.Normal):
        return _loc_scale("normal", fn.loc, fn.scale, batch)
    if isinstance(fn, torch.distributions.Laplace):
        return _loc_scale("laplace", fn.loc, fn.scale, batch)
    if isinstance(fn, torch.distributions.Cauchy):
        return _loc_scale("cauchy", fn.loc, fn.scale, batch)
    if isinstance(fn, torch.distributions.Gumbel):
        return _loc_scale("gumbel", fn.loc, fn.scale, batch)
    if isinstance(fn, torch.distributions.Uniform):
        return _loc_scale("uniform", fn.low, fn.high - fn.low, batch)
    if isinstance(fn, torch.distributions.Exponential):
        return _loc_scale("exponential", torch.zeros_like(fn.rate), 1 / fn.rate, batch)
    if isinstance(fn, torch.distributions.MultivariateNormal):
        return MultivariateNormalForm(fn.loc, fn.scale_tril)
    if isinstance(fn, torch.distributions.Categorical) and not isinstance(
        fn, torch.distributions.OneHotCategorical
    ):
        return CategoricalForm(fn.logits)
    if isinstance(fn, torch.distributions.Bernoulli):
        return BernoulliForm(fn.logits)
    if type(fn).__name__ == "NormalizingFlow" and hasattr(fn, "transform"):
        return ZukoFlowForm(fn, noise_form(fn.base, name))
    if isinstance(fn, torch.distributions.TransformedDistribution):
        bad = [t for t in fn.transforms if not t.bijective]
        if bad:
            raise NoiseRepresentationError(
                f"{site}: transform {type(bad[0]).__name__} of "
                f"{type(fn).__name__} is not bijective, so its noise cannot be "
                "shared across worlds"
            )
        base = noise_form(fn.base_dist, name)
        return TransformedForm(base, list(fn.transforms), batch, len(fn.event_shape))
    raise NoiseRepresentationError(
        f"{site}: {type(fn).__name__} has no noise representation x = f(u; parents), "
        "so its exogenous noise cannot be shared across worlds; use a mechanism "
        "(e.g. NSFMechanism), a location-scale family, a TransformedDistribution, "
        "Bernoulli or Categorical"
    )
