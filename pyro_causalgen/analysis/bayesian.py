"""Bayesian flow mechanisms: a prior on the parameters, a variational posterior by SVI.

:class:`BayesianModel` wraps a fitted model: each random parameter ``w`` becomes a
sample site ``param.<name>`` with prior ``Normal(0, prior_scale)`` (drawn outside every
plate), and the wrapped program runs with the drawn values through
``torch.func.functional_call``; the other parameters stay at their fitted values.
Which parameters are random is the user's choice: ``"all"`` of them, or ``"last"``,
the output layer of every hyper-network and MLP plus the parameters outside any MLP
(:func:`output_layer_parameters`), a last-layer posterior. :func:`fit_bayesian` fits a
mean-field (``AutoNormal``), low-rank or full-covariance Normal guide started at the
maximum-likelihood weights; :meth:`BayesianModel.posterior_models` returns callables
with one posterior draw of the weights each, so every analysis function (``simulate``,
effects, counterfactuals) gives posterior draws of causal quantities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoGuide,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.infer.autoguide.initialization import init_to_value
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from pyro_causalgen.infer.fit import prepare_model_data
from pyro_causalgen.mechanisms.stacked import StackedFlows
from pyro_causalgen.seeding import seeded_generator

PREFIX = "param."
GUIDES = ("normal", "lowrank", "mvn", "laplace")
#: Most random parameters a Laplace posterior takes (its Hessian is dense).
LAPLACE_MAX_PARAMETERS = 8192


def output_layer_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters a last-layer posterior treats as random.

    Every parameter except the weights and biases of the hidden layers of an MLP (an
    ``nn.Sequential`` of which only the last layer with a ``weight`` counts as output)
    and of the hidden layers of a
    :class:`~pyro_causalgen.mechanisms.stacked.StackedFlows`' hyper-networks (of its
    stacked weights only the last layer, ``weights.<last>`` and ``biases.<last>``,
    and of its affine step's likewise, count).

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale",
        ...                             mechanism_kwargs={"hidden_features": (8,)})
        >>> output_layer_parameters(scm)  # doctest: +NORMALIZE_WHITESPACE
        ['unstacked.x.loc', 'unstacked.x.log_scale', 'unstacked.y.log_scale',
         'unstacked.y.net.2.weight', 'unstacked.y.net.2.bias']
    """
    hidden: set[int] = set()
    for module in model.modules():
        if isinstance(module, StackedFlows):
            plists = [module.weights, module.biases]
            if module.affine:
                plists += [module.affine_weights, module.affine_biases]
            for plist in plists:
                hidden.update(id(p) for p in list(plist)[:-1])
        elif isinstance(module, nn.Sequential):
            linears = [
                m for m in module if isinstance(getattr(m, "weight", None), Tensor)
            ]
            for lin in linears[:-1]:
                hidden.update(id(p) for p in lin.parameters())
    return [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and id(p) not in hidden
    ]


class BayesianModel:
    """A model whose parameters are random: ``w ~ Normal(0, prior_scale)``.

    :param model: an ``nn.Module`` Pyro program (typically already fitted, whose
        weights start the variational posterior).
    :param prior_scale: standard deviation of the Normal prior on every parameter.
    :param random: ``"all"`` trainable parameters, ``"last"``
        (:func:`output_layer_parameters`) or an iterable of parameter names; the
        others keep their values.

    Example::

        >>> from pyro_causalgen.scm import StructuralCausalModel
        >>> scm = StructuralCausalModel({"x": []}, mechanism="locscale")
        >>> bayes = BayesianModel(scm)
        >>> trace = pyro.poutine.trace(bayes).get_trace(n=3)
        >>> len([k for k in trace.nodes if k.startswith("param.")])  # loc, log_scale
        2
    """

    def __init__(
        self,
        model: nn.Module,
        prior_scale: float = 1.0,
        random: str | Iterable[str] = "all",
    ) -> None:
        self.model = model
        self.prior_scale = prior_scale
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        if random == "all":
            names = trainable
        elif random == "last":
            names = output_layer_parameters(model)
        elif isinstance(random, str):
            raise ValueError(
                f"BayesianModel: random={random!r}; use 'all', 'last' or a list of "
                "parameter names"
            )
        else:
            names = list(random)
            unknown = sorted(set(names) - set(trainable))
            if unknown:
                raise KeyError(
                    f"BayesianModel: no trainable parameters {unknown} in the model; "
                    f"it has {trainable}"
                )
        if not names:
            raise ValueError("BayesianModel: no parameter is random")
        self.random = names
        self.guide: AutoGuide | None = None
        self._guide_args: tuple = ()

    def parameter_names(self) -> list[str]:
        """Names of the random parameters (sample sites ``param.<name>``)."""
        return list(self.random)

    def sample_parameters(self) -> dict[str, Tensor]:
        """Draw the random parameters from the prior (the guide under ``replay``)."""
        params = dict(self.model.named_parameters())
        values = {}
        for name in self.random:
            p = params[name]
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


def _make_guide(kind: str, model: Callable, init: dict, init_scale: float) -> AutoGuide:
    loc = init_to_value(values=init)
    if kind == "normal":
        return AutoNormal(model, init_loc_fn=loc, init_scale=init_scale)
    if kind == "lowrank":
        return AutoLowRankMultivariateNormal(
            model, init_loc_fn=loc, init_scale=init_scale
        )
    return AutoMultivariateNormal(model, init_loc_fn=loc, init_scale=init_scale)


@contextmanager
def _no_grad_for(params: list[Tensor]) -> Iterator[None]:
    """Switch off ``requires_grad`` of ``params`` (the fixed weights) for a while."""
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _hessian_by_differences(f: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
    """``D x D`` Hessian of ``f`` at ``theta`` by central differences of its exact
    gradient (step ``eps ** (1/3)`` of the dtype): first derivatives only, which is
    all the fused spline of stacked flows provides."""

    def grad(t: Tensor) -> Tensor:
        t = t.detach().requires_grad_(True)
        return torch.autograd.grad(f(t), t)[0]

    h = torch.finfo(theta.dtype).eps ** (1 / 3)
    cols = []
    for j in range(theta.numel()):
        step = torch.zeros_like(theta)
        step[j] = h
        cols.append((grad(theta + step) - grad(theta - step)) / (2 * h))
    return torch.stack(cols, 1)


def _laplace_guide(
    model: Callable,
    batch: dict[str, Tensor],
    init: dict[str, Tensor],
    prior_scale: float | None,
) -> tuple[AutoMultivariateNormal, float, float]:
    """``N(theta, H^-1)`` at the fitted weights ``theta``, ``H`` the Hessian of the
    negative log joint over all rows, as an ``AutoMultivariateNormal``; ``2 D``
    gradient passes over the data for ``D`` random parameters.

    ``model`` must put a ``Normal(0, 1)`` prior on every parameter (its Hessian is
    taken off). With ``prior_scale=None`` the prior precision ``alpha`` maximises
    the Laplace evidence ``-alpha |theta|^2 / 2 + D log(alpha) / 2 - log det(H) / 2``
    (empirical Bayes, on a log grid). Away from an exact optimum the likelihood's
    Hessian can have negative directions: each eigenvalue of ``H`` enters as its
    absolute value, at least ``alpha``.

    :returns: the guide, the negative log joint at ``theta`` (unit prior) and the
        prior scale ``alpha ** -1/2`` used.
    """
    names = list(init)
    theta = torch.cat([init[k].reshape(-1) for k in names])
    sizes = [init[k].numel() for k in names]

    def neg_log_joint(flat: Tensor) -> Tensor:
        values = {k: v.view_as(init[k]) for k, v in zip(names, flat.split(sizes))}
        conditioned = poutine.condition(model, data=values)
        return -poutine.trace(conditioned).get_trace(batch).log_prob_sum()

    loss = float(neg_log_joint(theta))
    H = _hessian_by_differences(neg_log_joint, theta)
    with torch.no_grad():
        evals, evecs = torch.linalg.eigh((H + H.T) / 2)
        lik = evals.double() - 1.0  # the likelihood's curvatures (unit prior off)

        def precisions(alpha: Tensor) -> Tensor:
            return torch.maximum((lik + alpha).abs(), alpha)

        if prior_scale is None:
            alphas = torch.logspace(-4, 6, 201, dtype=lik.dtype, device=lik.device)
            sq = theta.double().square().sum()
            evidence = torch.stack(
                [
                    -a * sq / 2 + len(lik) * a.log() / 2 - precisions(a).log().sum() / 2
                    for a in alphas
                ]
            )
            alpha = alphas[evidence.argmax()]
        else:
            alpha = lik.new_tensor(prior_scale**-2)
        prec = precisions(alpha).to(evecs)
        cov = (evecs / prec) @ evecs.T
        scale = cov.diagonal().sqrt()
        corr = cov / scale[:, None] / scale[None, :]
        scale_tril = torch.linalg.cholesky((corr + corr.T) / 2)
    guide = AutoMultivariateNormal(model)
    guide._setup_prototype(batch)
    del guide.loc, guide.scale, guide.scale_tril
    # the guide's latent vector follows its prototype trace's site order
    order = list(guide._unconstrained_shapes)
    if order != names:
        raise RuntimeError(f"Laplace: site order {order} differs from {names}")
    guide.register_buffer("loc", theta.detach())
    guide.register_buffer("scale", scale)
    guide.register_buffer("scale_tril", scale_tril)
    return guide, loss, float(alpha) ** -0.5


def fit_bayesian(
    model: nn.Module,
    data: Mapping[str, Any] | Any,
    *,
    prior_scale: float | str = 1.0,
    random: str | Iterable[str] = "all",
    guide: str = "normal",
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 5e-3,
    init_scale: float = 1e-2,
    units_arg: str = "n",
    seed: int | None = None,
    disable_progbar: bool = True,
) -> tuple[BayesianModel, list[float]]:
    """Approximate posterior over the parameters of ``model`` given fully observed data.

    The model should be fitted (``fit``) first: its weights start the guide's means
    (``"laplace"``: are its mean) and its standardisation is kept fixed. SVI guides
    see minibatches whose likelihood is scaled by ``N / B``.

    :param prior_scale: standard deviation of the ``Normal(0, s)`` prior on every
        random parameter; with ``guide="laplace"`` also ``"evidence"``: ``s`` that
        maximises the Laplace approximation of the marginal likelihood (empirical
        Bayes; the chosen value is ``bayes.prior_scale``).
    :param random: which parameters are random (see :class:`BayesianModel`): ``"all"``
        or ``"last"`` (a last-layer posterior; the hidden layers keep their fitted
        values).
    :param guide: ``"normal"`` (mean-field, ``AutoNormal``), ``"lowrank"``
        (``AutoLowRankMultivariateNormal``) or ``"mvn"`` (full covariance), fitted by
        ``steps`` of SVI; or ``"laplace"``: no SVI, a Gaussian at the fitted weights
        with the inverse Hessian of the negative log joint over all rows as its
        covariance (``D x D`` for ``D`` random parameters: use with ``random="last"``
        on all but tiny models).
    :returns: the :class:`BayesianModel` (its ``guide`` fitted) and the ELBO losses
        per row (``"laplace"``: one value, the negative log joint per row).

    Example::

        >>> from pyro_causalgen import StructuralCausalModel, fit
        >>> scm = StructuralCausalModel({"x": []}, mechanism="locscale")
        >>> data = {"x": torch.randn(50)}
        >>> _ = fit(scm, data, epochs=2)
        >>> bayes, losses = fit_bayesian(scm, data, guide="mvn", steps=5, seed=0)
        >>> len(bayes.posterior_models(3)), len(losses)
        (3, 5)
        >>> bayes, _ = fit_bayesian(scm, data, guide="laplace")
        >>> bayes.guide.scale_tril.shape  # loc and log_scale of x
        torch.Size([2, 2])
    """
    if guide not in GUIDES:
        raise ValueError(f"fit_bayesian: unknown guide {guide!r}; use one of {GUIDES}")
    if isinstance(prior_scale, str) and (prior_scale, guide) != ("evidence", "laplace"):
        raise ValueError(
            f"fit_bayesian: prior_scale={prior_scale!r}; a number, or 'evidence' "
            "with guide='laplace'"
        )
    tensors = prepare_model_data(model, data, (), {units_arg: 1})
    rows = next(iter(tensors.values())).shape[0]
    # a Laplace Hessian is taken under a unit prior (its scale is applied after)
    prior = 1.0 if guide == "laplace" else float(prior_scale)
    bayes = BayesianModel(model, prior, random)
    params = dict(model.named_parameters())
    init = {PREFIX + n: params[n].detach().clone() for n in bayes.random}
    fixed = [p for n, p in params.items() if p.requires_grad and n not in bayes.random]
    bayes._guide_args = ({k: v[:1] for k, v in tensors.items()},)

    def svi_model(batch: dict[str, Tensor]) -> Any:
        b = next(iter(batch.values())).shape[0]
        return poutine.condition(bayes, data=batch)(
            likelihood_scale=rows / b, **{units_arg: b}
        )

    if guide == "laplace":
        size = sum(v.numel() for v in init.values())
        if size > LAPLACE_MAX_PARAMETERS:
            raise ValueError(
                f"fit_bayesian: a Laplace posterior over {size} parameters needs a "
                f"{size} x {size} Hessian ({2 * size} gradient passes); the limit is "
                f"{LAPLACE_MAX_PARAMETERS}. Use random='last', fewer parameters "
                "(a list of names) or an SVI guide"
            )
        with _no_grad_for(fixed):
            bayes.guide, loss, bayes.prior_scale = _laplace_guide(
                svi_model,
                tensors,
                init,
                None if prior_scale == "evidence" else prior_scale,
            )
        return bayes, [loss / rows]
    bayes.guide = _make_guide(guide, svi_model, init, init_scale)
    gen = seeded_generator(seed)
    svi = SVI(svi_model, bayes.guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
    losses = []
    with _no_grad_for(fixed):  # the fixed weights need no gradients
        for _ in tqdm(range(steps), disable=disable_progbar, desc="svi"):
            idx = torch.randint(0, rows, (min(batch_size, rows),), generator=gen)
            batch = {k: v[idx.to(v.device)] for k, v in tensors.items()}
            losses.append(svi.step(batch) / rows)
    return bayes, losses
