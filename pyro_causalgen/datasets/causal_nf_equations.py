"""Structural equations of the synthetic SCMs of Javaloy et al. (2023).

Javaloy, Sánchez-Martín & Valera, "Causal normalizing flows: from theory to practice",
NeurIPS 2023 (Appendix, synthetic experiments; code at ``psanch21/causal-flows``,
``causal_nf/sem_equations``, and the ``causalflows`` package, ``scms.py``).

Every mechanism of these SCMs has the form

.. math::

    x_i = g_i(\\mathrm{pa}_i) + s_i \\, h_i(u_i)

with a constant ``s_i != 0`` and a strictly monotone *link* ``h_i`` (identity, sigmoid,
tanh, a softplus, or the standard Laplace quantile function). That form is what makes
abduction exact, ``u_i = h_i^{-1}((x_i - g_i(pa_i)) / s_i)``, and the log-Jacobian
closed-form, ``log |dx_i/du_i| = log |s_i| + log |h_i'(u_i)|``. The equations below are
the published ones, rewritten in that form; only the softplus is evaluated exactly
(``log(1 + e^t)`` through ``logaddexp``) instead of with PyTorch's default threshold,
so that the inverse maps are exact to float64 round-off.

The exogenous noise is standard normal in every SCM except ``large-backdoor``, whose
noise is ``Uniform(1e-6, 1)`` (``base_version=1`` of the paper's code,
``causal_nf/preparators/scm/_base_distributions.py``). The variables intervened on in
the paper's evaluation (``intervention_index_list`` of each SEM) are recorded as
``targets``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Link", "Mechanism", "SCMSpec", "SPECS", "UNIFORM_LOW"]

#: Lower end of the ``Uniform(UNIFORM_LOW, 1)`` noise of ``large-backdoor``.
UNIFORM_LOW = 1e-6


def softplus(t: Tensor) -> Tensor:
    """``log(1 + exp(t))`` without a threshold (exact inverse: :func:`softplus_inv`)."""
    return torch.logaddexp(t, torch.zeros_like(t))


def softplus_inv(v: Tensor) -> Tensor:
    """Inverse of :func:`softplus` for ``v > 0``: ``v + log(1 - exp(-v))``."""
    return v + torch.log(-torch.expm1(-v))


@dataclass(frozen=True)
class Link:
    """A strictly monotone scalar map ``h`` with its inverse and ``log |h'|``.

    :param name: short description, e.g. ``"sigmoid"``.
    :param fn: ``h(u)``, elementwise.
    :param inv: ``h^{-1}(v)``, elementwise.
    :param log_abs_deriv: ``log |h'(u)|`` as a function of ``u``, elementwise.

    Example::

        >>> u = torch.tensor([-1.0, 0.5], dtype=torch.float64)
        >>> torch.allclose(SIGMOID.inv(SIGMOID.fn(u)), u)
        True
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    inv: Callable[[Tensor], Tensor]
    log_abs_deriv: Callable[[Tensor], Tensor]


def _softplus_link(a: float, b: float) -> Link:
    """``h(u) = softplus(a u + b)``."""
    return Link(
        name=f"softplus({a:g} u + {b:g})",
        fn=lambda u: softplus(a * u + b),
        inv=lambda v: (softplus_inv(v) - b) / a,
        log_abs_deriv=lambda u: (
            math.log(abs(a)) + torch.nn.functional.logsigmoid(a * u + b)
        ),
    )


def _laplace_icdf(u: Tensor) -> Tensor:
    t = u - 0.5
    return -torch.sign(t) * torch.log1p(-2.0 * t.abs())


def _laplace_cdf(v: Tensor) -> Tensor:
    return 0.5 - 0.5 * torch.sign(v) * torch.expm1(-v.abs())


IDENTITY = Link("identity", lambda u: u, lambda v: v, lambda u: torch.zeros_like(u))
SIGMOID = Link(
    "sigmoid",
    torch.sigmoid,
    lambda v: torch.log(v) - torch.log1p(-v),
    lambda u: torch.nn.functional.logsigmoid(u) + torch.nn.functional.logsigmoid(-u),
)
TANH = Link(
    "tanh",
    torch.tanh,
    torch.atanh,
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|
    lambda u: 2.0 * (math.log(2.0) - u - softplus(-2.0 * u)),
)
#: Quantile function of the standard Laplace distribution, for ``u`` in ``(0, 1)``.
LAPLACE_ICDF = Link(
    "laplace_icdf",
    _laplace_icdf,
    _laplace_cdf,
    lambda u: math.log(2.0) - torch.log1p(-2.0 * (u - 0.5).abs()),
)


@dataclass(frozen=True)
class Mechanism:
    """``x = loc(*parents) + scale * link(u)``: one structural equation.

    :param parents: names of the parents, in the order ``loc`` takes them.
    :param loc: ``g(pa)``; called with one tensor per parent (none for a root) and
        returns a tensor or a float.
    :param scale: the constant ``s`` (non-zero; its sign matters, e.g. ``x = 2 - u``).
    :param link: the monotone map ``h`` applied to the noise.

    Example::

        >>> m = Mechanism(("x1",), lambda x1: 10 * x1, -1.0)
        >>> x1, u2 = torch.tensor([1.0]), torch.tensor([0.5])
        >>> m(x1, u=u2), m.inverse(x1, x=m(x1, u=u2))
        (tensor([9.5000]), tensor([0.5000]))
    """

    parents: tuple[str, ...]
    loc: Callable[..., Tensor | float]
    scale: float
    link: Link = field(default=IDENTITY)

    def __call__(self, *pa: Tensor, u: Tensor) -> Tensor:
        """``x`` from the parents' values and the noise ``u`` (all shape ``batch``)."""
        return self.loc(*pa) + self.scale * self.link.fn(u)

    def inverse(self, *pa: Tensor, x: Tensor) -> Tensor:
        """Exact abduction ``u`` from the parents' values and ``x``."""
        return self.link.inv((x - self.loc(*pa)) / self.scale)

    def log_abs_du(self, u: Tensor) -> Tensor:
        """``log |dx/du|``, which does not depend on the parents."""
        return math.log(abs(self.scale)) + self.link.log_abs_deriv(u)


@dataclass(frozen=True)
class SCMSpec:
    """The equations of one SCM: mechanisms in causal order, noise and targets.

    Example::

        >>> spec = SPECS["chain-3", "linear"]
        >>> list(spec.mechanisms), spec.noise, spec.targets
        (['x1', 'x2', 'x3'], 'normal', ('x1', 'x2'))
    """

    mechanisms: dict[str, Mechanism]
    noise: str  # "normal" or "uniform"
    targets: tuple[str, ...]
    equations: str


def _root(loc: float = 0.0, scale: float = 1.0, link: Link = IDENTITY) -> Mechanism:
    return Mechanism((), lambda: loc, scale, link)


def _sigmoid(t: Tensor) -> Tensor:
    return torch.sigmoid(t)


# --- triangle: x1 -> x2, x1 -> x3, x2 -> x3

_TRIANGLE = {
    "linear": (
        {
            "x1": _root(1.0),
            "x2": Mechanism(("x1",), lambda x1: 10 * x1, -1.0),
            "x3": Mechanism(("x1", "x2"), lambda x1, x2: 0.5 * x2 + x1, 1.0),
        },
        "x1 = u1 + 1;  x2 = 10 x1 - u2;  x3 = 0.5 x2 + x1 + u3",
    ),
    "non-linear": (
        {
            "x1": _root(),
            "x2": Mechanism(("x1",), lambda x1: 2 * x1**2, 1.0),
            "x3": Mechanism(
                ("x1", "x2"), lambda x1, x2: 20.0 * _sigmoid(x2**2 - x1), 1.0
            ),
        },
        "x1 = u1;  x2 = 2 x1^2 + u2;  x3 = 20 / (1 + exp(-x2^2 + x1)) + u3",
    ),
    "non-linear-2": (
        {
            "x1": _root(link=SIGMOID),
            "x2": Mechanism(("x1",), lambda x1: 10 * torch.sqrt(x1), -1.0),
            "x3": Mechanism(
                ("x1", "x2"), lambda x1, x2: 0.5 * x2 + 1.0 / (1.0 + x1), 1.0
            ),
        },
        "x1 = sigmoid(u1);  x2 = 10 sqrt(x1) - u2;  x3 = 0.5 x2 + 1 / (1 + x1) + u3",
    ),
}

# --- simpson: x1 -> x2, x1 -> x3, x2 -> x3, then x3 -> x4 (non-linear) or x1 -> x4

_SIMPSON = {
    "non-linear": (
        {
            "x1": _root(),
            "x2": Mechanism(("x1",), lambda x1: softplus(1.0 - x1), math.sqrt(3 / 20)),
            "x3": Mechanism(
                ("x1", "x2"),
                lambda x1, x2: torch.tanh(2 * x2) + 1.5 * x1 - 1.0,
                1.0,
                TANH,
            ),
            "x4": Mechanism(
                ("x3",), lambda x3: (x3 - 4.0) / 5.0 + 3.0, 1 / math.sqrt(10)
            ),
        },
        "x1 = u1;  x2 = softplus(1 - x1) + sqrt(3/20) u2;  "
        "x3 = tanh(2 x2) + 3/2 x1 - 1 + tanh(u3);  "
        "x4 = (x3 - 4) / 5 + 3 + u4 / sqrt(10)",
    ),
    "sym-prod": (
        {
            "x1": _root(),
            "x2": Mechanism(
                ("x1",), lambda x1: 2 * torch.tanh(2 * x1), 1 / math.sqrt(10)
            ),
            "x3": Mechanism(
                ("x1", "x2"), lambda x1, x2: 0.5 * x1 * x2, 1 / math.sqrt(2)
            ),
            "x4": Mechanism(
                ("x1",), lambda x1: torch.tanh(1.5 * x1), math.sqrt(3 / 10)
            ),
        },
        "x1 = u1;  x2 = 2 tanh(2 x1) + u2 / sqrt(10);  x3 = x1 x2 / 2 + u3 / sqrt(2);  "
        "x4 = tanh(3/2 x1) + sqrt(3/10) u4",
    ),
}

# --- large-backdoor (9 nodes, Uniform(1e-6, 1) noise)


def _layer_loc(t: Tensor) -> Tensor:
    # layer(t, u) = softplus(t + 1) + softplus(0.5 + u) - 3, split into loc + link
    return softplus(t + 1.0) - 3.0


def _x9_loc(x7: Tensor, x8: Tensor) -> Tensor:
    return 2.0 - softplus((1.3 * x7 + x8) / 3.0 + 1.0)


_LAYER_LINK = _softplus_link(1.0, 0.5)
_LARGE_BACKDOOR = {
    "non-linear": (
        {
            "x1": _root(-1.0, 1.0, _softplus_link(1.8, 0.0)),
            "x2": Mechanism(
                ("x1",),
                lambda x1: 1.5 * (_layer_loc(x1) + math.log1p(math.exp(0.5))),
                0.25,
            ),
            "x3": Mechanism(("x1",), _layer_loc, 1.0, _LAYER_LINK),
            "x4": Mechanism(("x2",), _layer_loc, 1.0, _LAYER_LINK),
            "x5": Mechanism(("x3",), _layer_loc, 1.0, _LAYER_LINK),
            "x6": Mechanism(("x4",), _layer_loc, 1.0, _LAYER_LINK),
            "x7": Mechanism(("x5",), _layer_loc, 1.0, _LAYER_LINK),
            "x8": Mechanism(("x6",), lambda x6: softplus(x6 + 1.0) - 1.0, 0.3),
            "x9": Mechanism(("x7", "x8"), _x9_loc, 0.6, LAPLACE_ICDF),
        },
        "layer(a, b) = softplus(a + 1) + softplus(b + 0.5) - 3;  "
        "x1 = softplus(1.8 u1) - 1;  x2 = 1.5 layer(x1, 0) + u2 / 4;  "
        "x3 = layer(x1, u3);  x4 = layer(x2, u4);  x5 = layer(x3, u5);  "
        "x6 = layer(x4, u6);  x7 = layer(x5, u7);  "
        "x8 = softplus(x6 + 1) - 1 + 0.3 u8;  "
        "x9 = LaplaceQuantile(u9; loc = 2 - softplus((1.3 x7 + x8) / 3 + 1), "
        "scale = 0.6)",
    ),
}

# --- fork: x1 -> x3 <- x2, x3 -> x4

_FORK = {
    "linear": (
        {
            "x1": _root(),
            "x2": _root(2.0, -1.0),
            "x3": Mechanism(("x1", "x2"), lambda x1, x2: 0.25 * x2 - 1.5 * x1, 0.5),
            "x4": Mechanism(("x3",), lambda x3: x3, 0.25),
        },
        "x1 = u1;  x2 = 2 - u2;  x3 = 0.25 x2 - 1.5 x1 + 0.5 u3;  x4 = x3 + 0.25 u4",
    ),
    "non-linear": (
        {
            "x1": _root(),
            "x2": _root(),
            "x3": Mechanism(
                ("x1", "x2"), lambda x1, x2: 4.0 * _sigmoid(x1 + x2) - x2**2, 0.5
            ),
            "x4": Mechanism(("x3",), lambda x3: 20.0 * _sigmoid(x3 - x3**2 / 2), 1.0),
        },
        "x1 = u1;  x2 = u2;  x3 = 4 / (1 + exp(-x1 - x2)) - x2^2 + u3 / 2;  "
        "x4 = 20 / (1 + exp(x3^2 / 2 - x3)) + u4",
    ),
}

# --- diamond: x1 -> x2, x1 -> x3, x2 -> x3, x2 -> x4, x3 -> x4

_DIAMOND = {
    "non-linear": (
        {
            "x1": _root(),
            "x2": Mechanism(("x1",), lambda x1: x1**2, 0.5),
            "x3": Mechanism(
                ("x1", "x2"), lambda x1, x2: x2**2 - 2.0 * _sigmoid(x1), 0.5
            ),
            "x4": Mechanism(
                ("x2", "x3"),
                lambda x2, x3: x3 / ((x2 + 2.0).abs() + x3 + 0.5),
                0.1,
            ),
        },
        "x1 = u1;  x2 = x1^2 + u2 / 2;  x3 = x2^2 - 2 / (1 + exp(-x1)) + u3 / 2;  "
        "x4 = x3 / (|x2 + 2| + x3 + 0.5) + u4 / 10",
    ),
}

# --- collider: x1 -> x3 <- x2

_COLLIDER = {
    "linear": (
        {
            "x1": _root(),
            "x2": _root(2.0, -1.0),
            "x3": Mechanism(("x1", "x2"), lambda x1, x2: 0.25 * x2 - 0.5 * x1, 0.5),
        },
        "x1 = u1;  x2 = 2 - u2;  x3 = 0.25 x2 - 0.5 x1 + 0.5 u3",
    ),
}

# --- chains

_CHAIN3 = {
    "linear": (
        {
            "x1": _root(),
            "x2": Mechanism(("x1",), lambda x1: 10 * x1, -1.0),
            "x3": Mechanism(("x2",), lambda x2: 0.25 * x2, 2.0),
        },
        "x1 = u1;  x2 = 10 x1 - u2;  x3 = 0.25 x2 + 2 u3",
    ),
    "non-linear": (
        {
            "x1": _root(),
            "x2": Mechanism(("x1",), lambda x1: torch.exp(x1 / 2.0), 0.25),
            "x3": Mechanism(("x2",), lambda x2: (x2 - 5.0) ** 3 / 15.0, 1.0),
        },
        "x1 = u1;  x2 = exp(x1 / 2) + u2 / 4;  x3 = (x2 - 5)^3 / 15 + u3",
    ),
    "non-linear-2": (
        {
            "x1": _root(link=SIGMOID),
            "x2": Mechanism(("x1",), lambda x1: 10 * torch.sqrt(x1), -1.0),
            "x3": Mechanism(("x2",), lambda x2: 0.25 * x2, 2.0),
        },
        "x1 = sigmoid(u1);  x2 = 10 sqrt(x1) - u2;  x3 = 0.25 x2 + 2 u3",
    ),
    "non-linear-3": (
        {
            "x1": _root(),
            "x2": Mechanism(("x1",), lambda x1: x1**2, -1.0),
            "x3": Mechanism(("x2",), lambda x2: 0.25 * x2, 2.0),
        },
        "x1 = u1;  x2 = x1^2 - u2;  x3 = 0.25 x2 + 2 u3",
    ),
}

_CHAIN4 = {
    "linear": (
        {
            "x1": _root(),
            "x2": Mechanism(("x1",), lambda x1: 5 * x1, -1.0),
            "x3": Mechanism(("x2",), lambda x2: -0.5 * x2, -1.5),
            "x4": Mechanism(("x3",), lambda x3: x3, 1.0),
        },
        "x1 = u1;  x2 = 5 x1 - u2;  x3 = -0.5 x2 - 1.5 u3;  x4 = x3 + u4",
    ),
}

_CHAIN5 = {
    "linear": (
        {
            "x1": _root(),
            "x2": Mechanism(("x1",), lambda x1: 10 * x1, -1.0),
            "x3": Mechanism(("x2",), lambda x2: 0.25 * x2, 2.0),
            "x4": Mechanism(("x3",), lambda x3: x3, 1.0),
            "x5": Mechanism(("x4",), lambda x4: -x4, 1.0),
        },
        "x1 = u1;  x2 = 10 x1 - u2;  x3 = 0.25 x2 + 2 u3;  x4 = x3 + u4;  "
        "x5 = -x4 + u5",
    ),
}

# (name -> (variants, noise, paper's intervention targets))
_FAMILIES: dict[str, tuple[dict, str, tuple[str, ...]]] = {
    "triangle": (_TRIANGLE, "normal", ("x1", "x2")),
    "simpson": (_SIMPSON, "normal", ("x1", "x2", "x3")),
    "large-backdoor": (_LARGE_BACKDOOR, "uniform", ("x1", "x2", "x3", "x5")),
    "fork": (_FORK, "normal", ("x2", "x3")),
    "diamond": (_DIAMOND, "normal", ("x1", "x2", "x3")),
    "collider": (_COLLIDER, "normal", ("x2",)),
    "chain-3": (_CHAIN3, "normal", ("x1", "x2")),
    "chain-4": (_CHAIN4, "normal", ("x1", "x2", "x3")),
    "chain-5": (_CHAIN5, "normal", ("x1", "x2", "x3")),
}

#: ``(name, variant) -> SCMSpec`` for every SCM of the paper.
SPECS: dict[tuple[str, str], SCMSpec] = {
    (name, variant): SCMSpec(dict(mechs), noise, targets, eqs)
    for name, (variants, noise, targets) in _FAMILIES.items()
    for variant, (mechs, eqs) in variants.items()
}
