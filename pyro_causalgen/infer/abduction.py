"""Abduction: the posterior over a model's exogenous noise given factual observations.

Under a counterfactual handler every mechanism site ``x`` has a noise site ``u(x)``.
Where ``x`` and its parents are observed (or their noise is known) and the mechanism is
invertible, ``u(x)`` is the exact inverse and needs no inference; discrete observed
sites get an exact draw of ``p(u | x)`` (truncated Gumbel). What remains are the
*latent* noise sites, of the unobserved sites; :func:`abduct` returns their posterior
``p(u_latent | observations)`` as a :class:`NoisePosterior`:

- ``method="prior"``: no inference, the prior (exact when no observed site depends on a
  latent one, e.g. unobserved sites downstream of every observation);
- ``method="importance"``: sampling-importance-resampling with the prior as proposal,
  vectorised over ``num_particles`` particles, resampled independently per unit of
  every plate the posterior factorises over;
- ``method="svi"``: stochastic variational inference with an ``AutoNormal`` guide (or
  one given) over the latent noise sites.
- ``method="auto"``: ``"prior"`` when no observed site depends on latent noise
  (checked by running two particles), else ``"importance"``.

A counterfactual is then a posterior predictive: condition the noise sites on a draw of
:meth:`NoisePosterior.sample` and run the model under a world handler (which is what
:func:`~pyro_causalgen.infer.counterfactual.counterfactual` does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch import Tensor

from pyro_causalgen.errors import CounterfactualError
from pyro_causalgen.handlers.twin_world import TwinWorldCounterfactual
from pyro_causalgen.handlers.worlds import INFER_NOISE, INFER_OBSERVED

PARTICLES = "causalgen_particles"


@dataclass
class NoisePosterior:
    """Posterior over the latent noise sites of a model given observations.

    :param latent: names of the latent noise sites (``u(x)`` for unobserved ``x``).
    :param method: ``"prior"``, ``"importance"`` or ``"svi"``.
    :param particles: for ``"importance"``: ``site -> (S, *shape)`` posterior draws
        (already resampled; every index is one joint draw).
    :param guide: for ``"svi"``: the fitted guide over the latent noise sites.
    :param ess: for ``"importance"``: effective sample size per independent unit.
    :param losses: for ``"svi"``: the ELBO loss per step.
    :param args: for ``"svi"``: the model arguments the guide is run with.
    :param kwargs: for ``"svi"``: the model keyword arguments.

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     return pyro.sample("x", dist.Normal(z, 1.0))
        >>> post = abduct(model, {"x": 2.0}, method="importance", num_particles=4000)
        >>> abs(post.particles["u(z)"].mean().item() - 1.0) < 0.1
        True
    """

    latent: list[str]
    method: str
    particles: dict[str, Tensor] = field(default_factory=dict)
    guide: Callable | None = None
    ess: Tensor | None = None
    losses: list[float] = field(default_factory=list)
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def sample(self) -> dict[str, Tensor]:
        """One joint draw of the latent noise, ``site -> value`` (empty for the prior:
        the handler then draws latent noise from its prior)."""
        if self.method == "importance" and self.particles:
            first = next(iter(self.particles.values()))
            i = int(torch.randint(first.shape[0], ()))
            return {k: v[i] for k, v in self.particles.items()}
        if self.method == "svi" and self.guide is not None:
            tr = poutine.trace(self.guide).get_trace(*self.args, **self.kwargs)
            return {k: tr.nodes[k]["value"] for k in self.latent if k in tr.nodes}
        return {}


def max_plate_nesting(model: Callable, *args: Any, **kwargs: Any) -> int:
    """The number of plate dims a model uses, from one traced run.

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     with pyro.plate("a", 2), pyro.plate("b", 3):
        ...         pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> max_plate_nesting(model)
        2
    """
    with torch.no_grad(), poutine.block():
        tr = poutine.trace(model).get_trace(*args, **kwargs)
    depth = 0
    for site in tr.nodes.values():
        for f in site.get("cond_indep_stack", ()):
            if f.vectorized and f.dim is not None:
                depth = max(depth, -f.dim)
    return depth


def abduct(
    model: Callable,
    observations: Mapping[str, Any],
    *args: Any,
    method: str = "auto",
    num_particles: int = 256,
    guide: Callable | None = None,
    num_steps: int = 1000,
    lr: float = 0.01,
    plate_nesting: int | None = None,
    **kwargs: Any,
) -> NoisePosterior:
    """Infer the posterior of the latent exogenous noise of ``model`` given data.

    :param model: a Pyro program (without ``obs=`` on its mechanism sites).
    :param observations: ``site -> observed factual value``.
    :param args: positional arguments of ``model``.
    :param method: ``"auto"``, ``"prior"``, ``"importance"`` or ``"svi"``.
    :param num_particles: importance particles (per unit, vectorised).
    :param guide: for ``"svi"``: a guide over the latent noise sites (default
        ``AutoNormal``).
    :param num_steps: SVI steps.
    :param lr: SVI Adam learning rate.
    :param plate_nesting: the model's plate depth (default: from one traced run).
    :param kwargs: keyword arguments of ``model``.
    :returns: a :class:`NoisePosterior`.
    :raises CounterfactualError: for an unknown ``method``.

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     return pyro.sample("y", dist.Normal(x, 1.0))
        >>> abduct(model, {"x": 0.0, "y": 1.0}).latent  # all noise is exact
        []
    """
    if method not in ("auto", "prior", "importance", "svi"):
        raise CounterfactualError(
            f"unknown abduction method {method!r}; use 'auto', 'prior', "
            "'importance' or 'svi'"
        )
    factual = TwinWorldCounterfactual(observations=observations)
    with torch.no_grad(), poutine.block():
        factual(model)(*args, **kwargs)
    latent = list(factual.latent_noise)
    if not latent or method == "prior":
        return NoisePosterior(latent, "prior")
    depth = (
        plate_nesting
        if plate_nesting is not None
        else max_plate_nesting(factual(model), *args, **kwargs)
    )
    if method == "auto":
        particles, lw, _ = _importance(model, observations, 2, depth, args, kwargs)
        if torch.equal(lw.max(0).values, lw.min(0).values):
            return NoisePosterior(latent, "prior")
        method = "importance"
    if method == "importance":
        particles, lw, ess = _importance(
            model, observations, num_particles, depth, args, kwargs
        )
        return NoisePosterior(latent, "importance", particles=particles, ess=ess)
    return _svi(model, observations, latent, guide, num_steps, lr, args, kwargs)


def _importance(
    model: Callable,
    observations: Mapping[str, Any],
    num: int,
    depth: int,
    args: tuple,
    kwargs: dict,
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Vectorised SIR: ``num`` prior particles in a plate at ``-(depth + 1)``."""
    pdim = -(depth + 1)
    handler = TwinWorldCounterfactual(observations, max_plate_nesting=depth + 1)
    with torch.no_grad(), pyro.plate(PARTICLES, num, dim=pdim):
        tr = poutine.trace(handler(model)).get_trace(*args, **kwargs)
    sites = [
        s
        for s in tr.nodes.values()
        if s["type"] == "sample"
        and (s["infer"].get(INFER_OBSERVED) or s["name"] in handler.latent_noise)
    ]
    # plates (other than the particles) that every latent and observed site is in:
    # the posterior factorises over them, so each of their units is resampled alone
    common: set[int] | None = None
    for s in sites:
        dims = {
            f.dim
            for f in s["cond_indep_stack"]
            if f.vectorized and f.dim is not None and f.name != PARTICLES
        }
        common = dims if common is None else common & dims
    common = common or set()
    lw = torch.zeros((num,) + (1,) * depth, device=_device(tr))
    for s in sites:
        if s["infer"].get(INFER_OBSERVED):
            lp = s["fn"].log_prob(s["value"])
            lw = lw + _to_batch(lp, depth + 1)
    for d in range(-depth, 0):
        if d not in common and lw.shape[d] > 1:  # a coupled plate: joint weights
            lw = lw.sum(d, keepdim=True)
    logits = lw.movedim(0, -1)
    idx = torch.distributions.Categorical(logits=logits).sample((num,))  # (S, *rest)
    w = torch.softmax(logits, -1)
    ess = 1.0 / (w**2).sum(-1)
    particles: dict[str, Tensor] = {}
    for name in handler.latent_noise:
        value = tr.nodes[name]["value"]
        event = value.dim() - (depth + 1)
        particles[name] = _gather_particles(value, idx, depth + 1, event)
    return particles, lw, ess


def _to_batch(t: Tensor, ndims: int) -> Tensor:
    """Right-align ``t`` to ``ndims`` dims (adding leading singletons)."""
    while t.dim() < ndims:
        t = t.unsqueeze(0)
    return t


def _gather_particles(value: Tensor, idx: Tensor, ndims: int, event: int) -> Tensor:
    """``value[idx]`` along the particle dim, independently per unit of ``idx``."""
    value = _to_batch(value, ndims + event)
    batch = value.shape[: value.dim() - event]
    index = idx.expand(torch.Size((idx.shape[0],)) + batch[1:])
    index = index.reshape(index.shape + (1,) * event).expand(
        index.shape + value.shape[value.dim() - event :]
    )
    return torch.gather(value, 0, index)


def _device(tr: Any) -> torch.device:
    for s in tr.nodes.values():
        v = s.get("value")
        if isinstance(v, Tensor):
            return v.device
    return torch.device("cpu")


def _svi(
    model: Callable,
    observations: Mapping[str, Any],
    latent: list[str],
    guide: Callable | None,
    num_steps: int,
    lr: float,
    args: tuple,
    kwargs: dict,
) -> NoisePosterior:
    factual = TwinWorldCounterfactual(observations=observations)(model)
    if guide is None:
        guide = AutoNormal(
            poutine.block(
                factual, expose_fn=lambda m: bool(m["infer"].get(INFER_NOISE))
            )
        )
    svi = SVI(factual, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
    losses = [float(svi.step(*args, **kwargs)) for _ in range(num_steps)]
    return NoisePosterior(
        latent, "svi", guide=guide, losses=losses, args=args, kwargs=dict(kwargs)
    )
