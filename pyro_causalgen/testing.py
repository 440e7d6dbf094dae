"""Testing helpers users can import: example SCMs and checks of counterfactual laws.

- :data:`EXAMPLES` / :func:`example_scm`: a registry of small structural causal models
  written as ordinary Pyro programs (chain, fork, collider, back-door, front-door,
  instrumental variable, a normalizing-flow SCM, a discrete SCM, a linear-Gaussian SCM
  with a closed form), each an ``nn.Module`` called as ``model(n)`` that samples ``n``
  units in a plate named ``"units"`` and returns ``{site: value}``.
- :func:`assert_close`: ``torch.testing.assert_close`` with a message naming the site.
- :func:`check_counterfactual_laws`: the laws every counterfactual answer must obey,
  usable on your own models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_causalgen.handlers import TwinWorldCounterfactual, do
from pyro_causalgen.infer.counterfactual import counterfactual
from pyro_causalgen.mechanisms import NSFMechanism
from pyro_causalgen.mechanisms.discrete import BernoulliMechanism, CategoricalMechanism

UNITS = "units"


def assert_close(
    actual: Tensor, expected: Tensor | float, atol: float = 1e-6, msg: str = ""
) -> None:
    """Assert ``actual == expected`` elementwise within ``atol`` (and ``rtol=0``).

    Example::

        >>> assert_close(torch.tensor([1.0]), 1.0)
    """
    expected = torch.as_tensor(expected, dtype=actual.dtype, device=actual.device)
    torch.testing.assert_close(
        actual,
        expected.expand_as(actual),
        atol=atol,
        rtol=0.0,
        msg=lambda m: f"{msg}: {m}" if msg else m,
    )


@dataclass
class ExampleSCM:
    """One registry entry.

    :param name: registry key.
    :param model: the Pyro program, ``model(n) -> {site: (n, *event)}``.
    :param parents: the causal graph, ``site -> parents`` (latent sites included).
    :param observed: the sites one would observe (the others are latent).
    :param treatment: a site to intervene on.
    :param value: a hard intervention value for ``treatment``.
    """

    name: str
    model: nn.Module
    parents: dict[str, list[str]]
    observed: list[str]
    treatment: str
    value: float
    discrete: list[str] = field(default_factory=list)

    @property
    def latent(self) -> list[str]:
        return [s for s in self.parents if s not in self.observed]

    def descendants(self, site: str) -> set[str]:
        """Sites strictly downstream of ``site``."""
        out: set[str] = set()
        frontier = [site]
        while frontier:
            s = frontier.pop()
            for child, pas in self.parents.items():
                if s in pas and child not in out:
                    out.add(child)
                    frontier.append(child)
        return out


class _Program(nn.Module):
    """Base: a dict of site functions called in order inside the ``units`` plate."""

    order: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_ref", torch.zeros(()))

    def c(self, v: float) -> Tensor:
        return torch.as_tensor(v, dtype=self._ref.dtype, device=self._ref.device)

    def site(self, name: str, v: dict[str, Tensor]) -> Any:
        raise NotImplementedError

    def forward(self, n: int = 1) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        with pyro.plate(UNITS, n):
            for name in self.order:
                values[name] = pyro.sample(name, self.site(name, values))
        return values


class LinearGaussian(_Program):
    """``x ~ N(0, 1)``, ``y = 2x + 0.5 e``, ``z = 3x - y + e``: closed form everywhere.

    Counterfactual of ``do(y = a)`` given ``(x, y, z)``: ``z' = z + (y - a)``; given
    ``(x, z)`` alone, ``y`` is latent with a Gaussian posterior.
    """

    order = ["x", "y", "z"]

    def site(self, name: str, v: dict[str, Tensor]) -> Any:
        if name == "x":
            return dist.Normal(self.c(0.0), self.c(1.0))
        if name == "y":
            return dist.Normal(2 * v["x"], self.c(0.5))
        return dist.Normal(3 * v["x"] - v["y"], self.c(1.0))


class Chain(_Program):
    """``x -> y -> z`` with nonlinear locations and parent-dependent scales."""

    order = ["x", "y", "z"]

    def site(self, name: str, v: dict[str, Tensor]) -> Any:
        if name == "x":
            return dist.Normal(self.c(0.0), self.c(1.0))
        if name == "y":
            return dist.Normal(torch.tanh(v["x"]) + v["x"], F.softplus(v["x"]) + 0.3)
        return dist.Laplace(v["y"] ** 2 / 4, 0.5 + torch.sigmoid(v["y"]))


class Fork(_Program):
    """``x <- z -> y`` (z a common cause), ``y`` log-normal."""

    order = ["z", "x", "y"]

    def site(self, name: str, v: dict[str, Tensor]) -> Any:
        if name == "z":
            return dist.Normal(self.c(0.0), self.c(1.0))
        if name == "x":
            return dist.Normal(v["z"], self.c(1.0))
        return dist.LogNormal(0.5 * v["z"], self.c(0.4))


class Collider(_Program):
    """``x -> z <- y``."""

    order = ["x", "y", "z"]

    def site(self, name: str, v: dict[str, Tensor]) -> Any:
        if name in ("x", "y"):
            return dist.Normal(self.c(0.0), self.c(1.0))
        return dist.Normal(v["x"] * v["y"] + v["x"], 0.2 + F.softplus(v["y"]))


class BackDoor(_Program):
    """``z -> x -> y``, ``z -> y``: a measured confounder."""

    order = ["z", "x", "y"]

    def site(self, name: str, v: dict[str, Tensor]) -> Any:
        if name == "z":
            return dist.Normal(self.c(0.0), self.c(1.0))
        if name == "x":
            return dist.Normal(torch.sin(v["z"]), self.c(0.7))
        return dist.Normal(2 * v["x"] - v["z"], 0.3 + 0.2 * v["z"] ** 2)


class FrontDoor(_Program):
    """``u -> x -> m -> y``, ``u -> y``, ``u`` latent."""

    order = ["u", "x", "m", "y"]

    def site(self, name: str, v: dict[str, Tensor]) -> Any:
        if name == "u":
            return dist.Normal(self.c(0.0), self.c(1.0))
        if name == "x":
            return dist.Normal(v["u"], self.c(1.0))
        if name == "m":
            return dist.Normal(1.5 * v["x"], self.c(0.5))
        return dist.Normal(v["m"] - 2 * v["u"], self.c(0.5))


class InstrumentalVariable(_Program):
    """``z -> x -> y``, ``u -> x``, ``u -> y``, ``u`` latent, ``z`` an instrument."""

    order = ["z", "u", "x", "y"]

    def site(self, name: str, v: dict[str, Tensor]) -> Any:
        if name in ("z", "u"):
            return dist.Normal(self.c(0.0), self.c(1.0))
        if name == "x":
            return dist.Normal(v["z"] + v["u"], self.c(0.5))
        return dist.Normal(-v["x"] + 1.5 * v["u"], self.c(0.5))


class FlowChain(_Program):
    """``a -> b -> c`` with one neural-spline-flow mechanism per site."""

    order = ["a", "b", "c"]

    def __init__(self) -> None:
        super().__init__()
        kw = {"hidden_features": (16,), "transforms": 2}
        self.mechs = nn.ModuleDict(
            {
                "a": NSFMechanism(name="a", **kw),
                "b": NSFMechanism(parents=["a"], name="b", **kw),
                "c": NSFMechanism(parents=["a", "b"], name="c", **kw),
            }
        )

    def site(self, name: str, v: dict[str, Tensor]) -> Any:
        mech = self.mechs[name]
        return mech(**{p: v[p] for p in mech.parents})


class Discrete(_Program):
    """Binary ``t`` of ``a``, four-category ``k`` of ``(a, t)``, Gaussian ``y``."""

    order = ["a", "t", "k", "y"]

    def __init__(self) -> None:
        super().__init__()
        self.t_mech = BernoulliMechanism(parents=["a"], name="t")
        self.k_mech = CategoricalMechanism(4, parents=["a", "t"], name="k")
        with torch.no_grad():
            self.t_mech.net[0].weight.fill_(2.0)  # type: ignore[index]
            self.k_mech.net[0].weight.copy_(  # type: ignore[index]
                torch.tensor([[1.0, -2.0], [0.0, 2.0], [-1.0, 1.0], [0.5, 3.0]])
            )

    def site(self, name: str, v: dict[str, Tensor]) -> Any:
        if name == "a":
            return dist.Normal(self.c(0.0), self.c(1.0))
        if name == "t":
            return self.t_mech(v["a"])
        if name == "k":
            return self.k_mech(v["a"], v["t"])
        return dist.Normal(v["k"].to(self._ref.dtype) + 2 * v["t"], self.c(1.0))


def _examples() -> dict[str, Callable[[], ExampleSCM]]:
    return {
        "linear_gaussian": lambda: ExampleSCM(
            "linear_gaussian",
            LinearGaussian(),
            {"x": [], "y": ["x"], "z": ["x", "y"]},
            ["x", "y", "z"],
            "y",
            1.0,
        ),
        "chain": lambda: ExampleSCM(
            "chain",
            Chain(),
            {"x": [], "y": ["x"], "z": ["y"]},
            ["x", "y", "z"],
            "x",
            1.0,
        ),
        "fork": lambda: ExampleSCM(
            "fork",
            Fork(),
            {"z": [], "x": ["z"], "y": ["z"]},
            ["z", "x", "y"],
            "z",
            -1.0,
        ),
        "collider": lambda: ExampleSCM(
            "collider",
            Collider(),
            {"x": [], "y": [], "z": ["x", "y"]},
            ["x", "y", "z"],
            "x",
            2.0,
        ),
        "backdoor": lambda: ExampleSCM(
            "backdoor",
            BackDoor(),
            {"z": [], "x": ["z"], "y": ["x", "z"]},
            ["z", "x", "y"],
            "x",
            0.5,
        ),
        "frontdoor": lambda: ExampleSCM(
            "frontdoor",
            FrontDoor(),
            {"u": [], "x": ["u"], "m": ["x"], "y": ["m", "u"]},
            ["x", "m", "y"],
            "x",
            1.0,
        ),
        "iv": lambda: ExampleSCM(
            "iv",
            InstrumentalVariable(),
            {"z": [], "u": [], "x": ["z", "u"], "y": ["x", "u"]},
            ["z", "x", "y"],
            "x",
            -1.0,
        ),
        "flow": lambda: ExampleSCM(
            "flow",
            FlowChain(),
            {"a": [], "b": ["a"], "c": ["a", "b"]},
            ["a", "b", "c"],
            "a",
            0.5,
        ),
        "discrete": lambda: ExampleSCM(
            "discrete",
            Discrete(),
            {"a": [], "t": ["a"], "k": ["a", "t"], "y": ["k", "t"]},
            ["a", "t", "k", "y"],
            "t",
            1.0,
            discrete=["t", "k"],
        ),
    }


#: Names of the registered example SCMs.
EXAMPLES: tuple[str, ...] = tuple(_examples())


def example_scm(
    name: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ExampleSCM:
    """Build the registered example ``name`` (fresh weights, seeded by the caller).

    Example::

        >>> scm = example_scm("chain")
        >>> sorted(scm.model(4))
        ['x', 'y', 'z']
    """
    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; examples are {list(EXAMPLES)}")
    ex = _examples()[name]()
    ex.model.to(device=device, dtype=dtype)
    return ex


def sample_observations(ex: ExampleSCM, n: int) -> dict[str, Tensor]:
    """Draw ``n`` units from ``ex.model`` and keep the observed sites (detached).

    Example::

        >>> sorted(sample_observations(example_scm("iv"), 3))
        ['x', 'y', 'z']
    """
    with torch.no_grad(), poutine.block():
        values = ex.model(n)
    return {k: values[k].detach() for k in ex.observed}


def check_counterfactual_laws(
    model: Callable,
    observations: Mapping[str, Tensor],
    interventions: Mapping[str, Any],
    *args: Any,
    atol: float = 1e-6,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, Tensor]]:
    """Check the laws a counterfactual answer obeys, on one draw; return the draw.

    1. the factual world reproduces the observations;
    2. an intervened site equals its (hard) intervention in the counterfactual world;
    3. with every site observed, the log density the handler assigns to the factual
       world equals ``log p(observations)`` of the unintervened model;
    4. with the same noise, ``do`` inside and outside the handler agree.

    :param args: positional arguments of ``model``.
    :param atol: absolute tolerance of the exact laws.
    :param options: keyword options of
        :func:`~pyro_causalgen.infer.counterfactual.counterfactual` (``abduction``...).
    :param kwargs: keyword arguments of ``model``.
    :raises AssertionError: naming the law and the site that break it.

    Example::

        >>> ex = example_scm("linear_gaussian", dtype=torch.float64)
        >>> out = check_counterfactual_laws(ex.model, sample_observations(ex, 5),
        ...                                 {"y": 1.0}, 5)
        >>> sorted(out)
        ['counterfactual', 'factual']
    """
    out = counterfactual(
        model, observations, interventions, *args, **dict(options or {}), **kwargs
    )
    for site, value in observations.items():
        obs = torch.as_tensor(value).to(out["factual"][site])
        assert_close(out["factual"][site], obs, atol, f"law 1, factual '{site}'")
    for site, act in interventions.items():
        if isinstance(act, (int, float, Tensor)):
            got = out["counterfactual"][site]
            assert_close(got, torch.as_tensor(act).to(got), atol, f"law 2, '{site}'")
    names = list(out["factual"])
    if all(n in observations for n in names):
        with torch.no_grad():
            handler = TwinWorldCounterfactual(observations)
            lp_cf = poutine.trace(handler(model)).get_trace(*args, **kwargs)
            lp_model = poutine.trace(poutine.condition(model, dict(observations)))
            expected = lp_model.get_trace(*args, **kwargs).log_prob_sum()
        got = lp_cf.log_prob_sum()
        tol = atol * (1 + abs(float(expected)))
        assert abs(float(got) - float(expected)) <= tol, (
            f"law 3: factual log density {float(got)} != model {float(expected)}"
        )
        inner = TwinWorldCounterfactual(observations)
        outer = TwinWorldCounterfactual(observations)
        with torch.no_grad(), _same_randomness():
            inner(do(model, dict(interventions)))(*args, **kwargs)
        with torch.no_grad(), _same_randomness():
            do(outer(model), dict(interventions))(*args, **kwargs)
        for site in names:
            a = inner.gather(
                inner.values[site], "counterfactual", inner.event_dims[site]
            )
            b = outer.gather(
                outer.values[site], "counterfactual", outer.event_dims[site]
            )
            if site not in {s for s in interventions} or not callable(
                interventions[site]
            ):
                assert_close(a.double(), b.double(), atol, f"law 4, '{site}'")
    return out


class _same_randomness:
    """Run a block from the current RNG state and leave the state as it was, so two
    blocks draw the same random numbers (posterior noise of discrete sites)."""

    def __enter__(self) -> None:
        self._state = pyro.util.get_rng_state()

    def __exit__(self, *exc: Any) -> None:
        pyro.util.set_rng_state(self._state)


def standard_error(x: Tensor) -> float:
    """Monte Carlo standard error of the mean of ``x``.

    Example::

        >>> round(standard_error(torch.tensor([1.0, 3.0])), 6)
        1.0
    """
    return float(x.std()) / math.sqrt(x.numel())
