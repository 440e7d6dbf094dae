"""Bayesian flow mechanisms: a prior on every parameter, a variational posterior by SVI.

:class:`BayesianModel` wraps a fitted model: each parameter ``w`` becomes a sample site
``param.<name>`` with prior ``Normal(0, prior_scale)`` (drawn outside every plate), and
the wrapped program runs with the drawn values through ``torch.func.functional_call``.
:func:`fit_bayesian` fits a mean-field Normal guide (``AutoNormal``) started at the
maximum-likelihood weights; :meth:`BayesianModel.posterior_models` returns callables
with one posterior draw of the weights each, so every analysis function (``simulate``,
effects, counterfactuals) gives posterior draws of causal quantities.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from pyro_causalgen.infer.fit import prepare_model_data

PREFIX = "param."


class BayesianModel:
    """A model whose parameters are random: ``w ~ Normal(0, prior_scale)``.

    :param model: an ``nn.Module`` Pyro program (typically already fitted, whose
        weights start the variational posterior).
    :param prior_scale: standard deviation of the Normal prior on every parameter.

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"x": []}, mechanism="locscale")
        >>> bayes = BayesianModel(scm)
        >>> trace = pyro.poutine.trace(bayes).get_trace(n=3)
        >>> len([k for k in trace.nodes if k.startswith("param.")])  # loc, log_scale
        2
    """

    def __init__(self, model: nn.Module, prior_scale: float = 1.0) -> None:
        self.model = model
        self.prior_scale = prior_scale
        self.guide: AutoNormal | None = None
        self._guide_args: tuple = ()

    def parameter_names(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def sample_parameters(self) -> dict[str, Tensor]:
        """Draw every parameter from its prior (or the guide, under ``replay``)."""
        values = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            prior = dist.Normal(torch.zeros_like(p), self.prior_scale).to_event(p.dim())
            values[name] = pyro.sample(PREFIX + name, prior)
        return values

    def __call__(self, *args: Any, likelihood_scale: float = 1.0, **kwargs: Any) -> Any:
        params = self.sample_parameters()
        with poutine.scale(scale=likelihood_scale):
            return functional_call(self.model, params, args, kwargs)

    def posterior_models(self, draws: int) -> list[Callable[..., Any]]:
        """``draws`` callables, each the model with one posterior draw of weights."""
        if self.guide is None:
            raise RuntimeError("fit the posterior first (fit_bayesian)")
        out = []
        with torch.no_grad():
            for _ in range(draws):
                sample = self.guide(*self._guide_args)
                params = {k[len(PREFIX) :]: v for k, v in sample.items()}
                out.append(_Frozen(self.model, params))
        return out


@dataclass
class _Frozen:
    """The model with fixed parameter values (one posterior draw)."""

    model: nn.Module
    params: dict[str, Tensor] = field(repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.model, self.params, args, kwargs)


def fit_bayesian(
    model: nn.Module,
    data: Mapping[str, Any] | Any,
    *,
    prior_scale: float = 1.0,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 5e-3,
    init_scale: float = 1e-2,
    units_arg: str = "n",
    seed: int | None = None,
    disable_progbar: bool = True,
) -> tuple[BayesianModel, list[float]]:
    """Variational posterior over all parameters of ``model`` given fully observed data.

    The model should be fitted (``fit``) first: its weights start the guide's means and
    its standardisation is kept fixed. Minibatch likelihoods are scaled by ``N / B``.

    :returns: the :class:`BayesianModel` (its ``guide`` fitted) and the ELBO losses.
    """
    tensors = prepare_model_data(model, data, (), {units_arg: 1})
    rows = next(iter(tensors.values())).shape[0]
    bayes = BayesianModel(model, prior_scale)
    init = {PREFIX + n: p.detach().clone() for n, p in model.named_parameters()}

    def svi_model(batch: dict[str, Tensor]) -> Any:
        b = next(iter(batch.values())).shape[0]
        return poutine.condition(bayes, data=batch)(
            likelihood_scale=rows / b, **{units_arg: b}
        )

    guide = AutoNormal(
        svi_model, init_loc_fn=init_to_value(values=init), init_scale=init_scale
    )
    bayes.guide = guide
    gen = torch.Generator()
    gen.manual_seed(seed) if seed is not None else gen.seed()
    svi = SVI(svi_model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
    losses = []
    for _ in tqdm(range(steps), disable=disable_progbar, desc="svi"):
        idx = torch.randint(0, rows, (min(batch_size, rows),), generator=gen)
        batch = {k: v[idx.to(v.device)] for k, v in tensors.items()}
        losses.append(svi.step(batch) / rows)
    bayes._guide_args = ({k: v[:1] for k, v in tensors.items()},)
    return bayes, losses
