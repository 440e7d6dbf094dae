"""Ground-truth SCMs of the causal normalizing flows benchmark (Javaloy et al., 2023).

Javaloy, Sánchez-Martín & Valera, "Causal normalizing flows: from theory to practice",
NeurIPS 2023. The paper evaluates on triangle (linear, non-linear, non-linear-2),
simpson (non-linear, sym-prod), large-backdoor (non-linear), fork (linear,
non-linear), diamond (non-linear), collider (linear), chain-3 (linear, non-linear,
non-linear-2, non-linear-3), chain-4 (linear) and chain-5 (linear). Each is a
:class:`GroundTruthSCM` here, with exact samplers for the three rungs of the ladder:

- observational: :meth:`GroundTruthSCM.sample` and the exact density
  :meth:`GroundTruthSCM.log_prob` (change of variables through the exact inverse);
- interventional: ``sample(n, do={"x2": a})``, scalar or per-row values;
- counterfactual: :meth:`GroundTruthSCM.counterfactual` (exact abduction, then the
  intervened equations on the same noise).

Data are ``float64`` tensors of shape ``(..., d)`` whose last dimension follows
:attr:`GroundTruthSCM.variables` (``x1 ... xd``, the paper's numbering);
:meth:`GroundTruthSCM.to_dict` gives the ``{variable: (...,)}`` form that
:class:`~pyro_causalgen.scm.StructuralCausalModel` and ``fit`` use. The equations
themselves live in :mod:`pyro_causalgen.datasets.causal_nf_equations`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from pyro_causalgen.datasets.causal_nf_equations import SPECS, UNIFORM_LOW, SCMSpec
from pyro_causalgen.errors import ShapeError, UnknownSiteError

__all__ = ["CAUSAL_NF_SCMS", "GroundTruthSCM", "load_scm"]

#: An intervention value: a number, a 0-d tensor, or one value per row.
InterventionValue = float | Tensor

#: Every SCM of the paper: ``name -> variants``.
CAUSAL_NF_SCMS: dict[str, tuple[str, ...]] = {
    name: tuple(v for n, v in SPECS if n == name)
    for name in dict.fromkeys(n for n, _ in SPECS)
}

_ALIASES = {"chain": "chain-3", "chain3": "chain-3", "chain4": "chain-4"}
_ALIASES.update({"chain5": "chain-5", "largebackdoor": "large-backdoor"})
_ALIASES.update({"large_backdoor": "large-backdoor", "backdoor": "large-backdoor"})

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class GroundTruthSCM:
    """One SCM of Javaloy et al. (2023) with exact samplers, inverse and density.

    Build it with :func:`load_scm`. All computations are in ``float64`` on the device
    of the input (or of the generator, for sampling); the global RNG is only used when
    neither ``seed`` nor ``generator`` is given, and it is never seeded here.

    :param name: SCM name, e.g. ``"triangle"``.
    :param variant: equation type, e.g. ``"non-linear"``.
    :param spec: the equations (:class:`~.causal_nf_equations.SCMSpec`).

    Attributes: ``variables`` (causal order, ``["x1", ..., "xd"]``), ``parents``
    (``{"x2": ["x1"], ...}``, the format of ``StructuralCausalModel``), ``noise``
    (``"normal"`` or ``"uniform"``), ``intervention_targets`` (the variables the paper
    intervenes on), ``equations`` (human-readable).

    Example::

        >>> scm = load_scm("chain-3", "linear")
        >>> scm.parents
        {'x1': [], 'x2': ['x1'], 'x3': ['x2']}
        >>> x = scm.sample(4, seed=0)
        >>> x.shape, x.dtype
        (torch.Size([4, 3]), torch.float64)
        >>> torch.allclose(scm.forward(scm.abduct(x)), x)
        True
        >>> scm.counterfactual(x, do={"x2": 1.0})[:, 1]
        tensor([1., 1., 1., 1.], dtype=torch.float64)
    """

    def __init__(self, name: str, variant: str, spec: SCMSpec) -> None:
        self.name = name
        self.variant = variant
        self._mechanisms = dict(spec.mechanisms)
        self.variables: list[str] = list(self._mechanisms)
        self.parents: dict[str, list[str]] = {
            v: list(m.parents) for v, m in self._mechanisms.items()
        }
        self.noise: str = spec.noise
        self.intervention_targets: list[str] = list(spec.targets)
        self.equations: str = spec.equations
        self._index = {v: i for i, v in enumerate(self.variables)}

    # ----------------------------------------------------------------- structure

    @property
    def dim(self) -> int:
        """Number of variables ``d``."""
        return len(self.variables)

    def index(self, variable: str) -> int:
        """Column of ``variable`` in data tensors; raise if it is not a variable.

        Example::

            >>> load_scm("fork", "linear").index("x3")
            2
        """
        try:
            return self._index[variable]
        except (KeyError, TypeError):
            raise UnknownSiteError(
                f"'{variable}' is not a variable of {self} "
                f"(variables: {self.variables})"
            ) from None

    def descendants(self, variable: str) -> list[str]:
        """Strict descendants of ``variable``, in causal order.

        Example::

            >>> load_scm("fork", "linear").descendants("x2")
            ['x3', 'x4']
        """
        self.index(variable)
        found = {variable}
        for v in self.variables:
            if any(p in found for p in self.parents[v]):
                found.add(v)
        return [v for v in self.variables if v in found and v != variable]

    def to_dict(self, x: Tensor) -> dict[str, Tensor]:
        """Split ``(..., d)`` data into ``{variable: (...,)}``.

        Example::

            >>> scm = load_scm("collider", "linear")
            >>> {k: v.shape for k, v in scm.to_dict(scm.sample(5, seed=0)).items()}
            {'x1': torch.Size([5]), 'x2': torch.Size([5]), 'x3': torch.Size([5])}
        """
        self._check_last_dim(x, "x")
        return {v: x[..., i] for i, v in enumerate(self.variables)}

    def from_dict(self, data: Mapping[str, Tensor]) -> Tensor:
        """Stack ``{variable: (...,)}`` into ``(..., d)`` ``float64`` data.

        Example::

            >>> scm = load_scm("collider", "linear")
            >>> x = scm.sample(5, seed=0)
            >>> torch.equal(scm.from_dict(scm.to_dict(x)), x)
            True
        """
        missing = [v for v in self.variables if v not in data]
        if missing:
            raise UnknownSiteError(f"data for {self} lacks the variables {missing}")
        return torch.stack([_float64(data[v]) for v in self.variables], -1)

    # ----------------------------------------------------------------- noise

    def sample_noise(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` rows of exogenous noise ``u``, shape ``(n, d)``, ``float64``.

        Standard normal noise, except ``Uniform(1e-6, 1)`` for ``large-backdoor``.

        :param n: number of rows.
        :param generator: random generator; its device is the output's device. With
            ``None`` the global RNG is used (and not seeded).
        :param device: device when no generator is given (default CPU).

        Example::

            >>> scm = load_scm("large-backdoor", "non-linear")
            >>> u = scm.sample_noise(3, torch.Generator().manual_seed(0))
            >>> u.shape, bool(((u > 0) & (u < 1)).all())
            (torch.Size([3, 9]), True)
        """
        if generator is not None:
            device = generator.device
        shape = (int(n), self.dim)
        draw = torch.rand if self.noise == "uniform" else torch.randn
        u = draw(shape, generator=generator, dtype=torch.float64, device=device)
        if self.noise == "uniform":
            return UNIFORM_LOW + (1.0 - UNIFORM_LOW) * u
        return u

    def noise_log_prob(self, u: Tensor) -> Tensor:
        """Log density of the noise, summed over variables: ``(..., d) -> (...,)``.

        Example::

            >>> scm = load_scm("chain-3", "linear")
            >>> scm.noise_log_prob(torch.zeros(3, dtype=torch.float64)).item()
            -2.756815599614018
        """
        u = self._as_data(u, "u")
        if self.noise == "uniform":
            inside = ((u >= UNIFORM_LOW) & (u <= 1.0)).all(-1)
            value = -self.dim * math.log1p(-UNIFORM_LOW)
            return torch.where(inside, value, -math.inf).to(u)
        return (-0.5 * u**2 - _HALF_LOG_2PI).sum(-1)

    # ----------------------------------------------------------------- equations

    def forward(
        self, u: Tensor, do: Mapping[str, InterventionValue] | None = None
    ) -> Tensor:
        """Evaluate the structural equations on noise ``u`` (optionally under ``do``).

        :param u: noise, shape ``(..., d)``.
        :param do: hard interventions ``{variable: value}``; a value is a number, a
            0-d tensor, or a tensor broadcastable to the batch shape ``(...)`` (one
            value per row). Values are moved to ``u``'s device as ``float64``.
        :returns: ``x``, shape ``(..., d)``, ``float64``.
        :raises UnknownSiteError: if ``do`` names an unknown variable.
        :raises ShapeError: if an intervention value does not fit the batch shape.

        Example::

            >>> scm = load_scm("chain-3", "linear")
            >>> u = torch.zeros(2, 3, dtype=torch.float64)
            >>> scm.forward(u, do={"x1": torch.tensor([1.0, 2.0])})
            tensor([[ 1.0000, 10.0000,  2.5000],
                    [ 2.0000, 20.0000,  5.0000]], dtype=torch.float64)
        """
        u = self._as_data(u, "u")
        values = self._do_values(do, u)
        cols: dict[str, Tensor] = {}
        for v, i in self._index.items():
            if v in values:
                cols[v] = values[v]
            else:
                mech = self._mechanisms[v]
                pa = [cols[p] for p in mech.parents]
                cols[v] = torch.broadcast_to(mech(*pa, u=u[..., i]), u.shape[:-1])
        return torch.stack([cols[v] for v in self.variables], -1)

    def abduct(self, x: Tensor) -> Tensor:
        """Exact abduction: the noise ``u`` with ``forward(u) == x``; ``(..., d)``.

        Example::

            >>> scm = load_scm("triangle", "non-linear-2")
            >>> u = scm.sample_noise(5, torch.Generator().manual_seed(1))
            >>> bool((scm.abduct(scm.forward(u)) - u).abs().max() < 1e-10)
            True
        """
        x = self._as_data(x, "x")
        cols = x.unbind(-1)
        u = []
        for v, mech in self._mechanisms.items():
            pa = [cols[self._index[p]] for p in mech.parents]
            u.append(
                torch.broadcast_to(
                    mech.inverse(*pa, x=cols[self._index[v]]), x.shape[:-1]
                )
            )
        return torch.stack(u, -1)

    def log_abs_det_jacobian(self, u: Tensor) -> Tensor:
        """``log |det dx/du|`` of the observational map: ``(..., d) -> (...,)``.

        The Jacobian is triangular in the causal order, so this is the sum of
        ``log |dx_i/du_i|``.

        Example::

            >>> scm = load_scm("chain-3", "linear")
            >>> scm.log_abs_det_jacobian(torch.zeros(3, dtype=torch.float64)).item()
            0.6931471805599453
        """
        u = self._as_data(u, "u")
        terms = [
            torch.broadcast_to(m.log_abs_du(u[..., i]), u.shape[:-1])
            for i, m in enumerate(self._mechanisms.values())
        ]
        return torch.stack(terms, -1).sum(-1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact observational log density ``log p(x)``: ``(..., d) -> (...,)``.

        Change of variables through the exact inverse:
        ``log p(x) = log p_u(u) - log |det dx/du|`` with ``u = abduct(x)``.
        Finite points outside the support get ``-inf`` (e.g. ``x1`` outside ``(0, 1)``
        for ``non-linear-2``, where the inverse maps are undefined).

        Example::

            >>> scm = load_scm("collider", "linear")
            >>> x = scm.sample(10_000, seed=0)
            >>> round(-scm.log_prob(x).mean().item(), 1)  # entropy, closed form 3.56
            3.6
        """
        x = self._as_data(x, "x")
        u = self.abduct(x)
        lp = self.noise_log_prob(u) - self.log_abs_det_jacobian(u)
        outside = torch.isnan(lp) & ~torch.isnan(x).any(-1)
        return lp.masked_fill(outside, -math.inf)

    # ----------------------------------------------------------------- queries

    def sample(
        self,
        n: int,
        seed: int | None = None,
        do: Mapping[str, InterventionValue] | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` observational (or, with ``do``, interventional) rows ``(n, d)``.

        :param n: number of rows.
        :param seed: seed of a fresh generator on ``device``; exclusive with
            ``generator``. With neither, the global RNG is used (not seeded).
        :param do: hard interventions, as in :meth:`forward`.
        :param generator: random generator (its device is the output's device).
        :param device: device of the samples when no generator is given.

        Example::

            >>> scm = load_scm("fork", "non-linear")
            >>> x = scm.sample(3, seed=0, do={"x3": 0.5})
            >>> x[:, 2]
            tensor([0.5000, 0.5000, 0.5000], dtype=torch.float64)
            >>> torch.equal(x[:, :2], scm.sample(3, seed=0)[:, :2])  # same noise
            True
        """
        if seed is not None:
            if generator is not None:
                raise ValueError("give either seed or generator, not both")
            generator = torch.Generator(device=device or "cpu").manual_seed(int(seed))
        return self.forward(self.sample_noise(n, generator, device), do)

    def counterfactual(
        self, x_factual: Tensor, do: Mapping[str, InterventionValue]
    ) -> Tensor:
        """Exact counterfactuals: abduct the noise of each row, then intervene.

        :param x_factual: observed rows, ``(..., d)``.
        :param do: hard interventions, as in :meth:`forward` (per-row values allowed).
        :returns: counterfactual rows ``(..., d)``, same noise as the factual ones.

        Example::

            >>> scm = load_scm("chain-3", "linear")
            >>> x = torch.tensor([[0.0, 1.0, 0.25]], dtype=torch.float64)
            >>> scm.counterfactual(x, do={"x1": 1.0})  # u = (0, -1, 0)
            tensor([[ 1.0000, 11.0000,  2.7500]], dtype=torch.float64)
        """
        return self.forward(self.abduct(x_factual), do)

    def intervention_values(
        self,
        variable: str,
        data: Tensor,
        percentiles: Sequence[float] = (25.0, 50.0, 75.0),
        decimals: int | None = 2,
    ) -> Tensor:
        """Intervention values at percentiles of ``variable`` in ``data``.

        The paper intervenes at the 25th, 50th and 75th percentiles of the training
        data, rounded to 2 decimals (``SCMPreparator.get_intervention_list`` in
        ``psanch21/causal-flows``); percentiles interpolate linearly, like
        ``numpy.percentile``.

        :param variable: the variable intervened on.
        :param data: ``(n, d)`` (or ``(..., n, d)``) rows.
        :param percentiles: in ``[0, 100]``.
        :param decimals: rounding, ``None`` for none.
        :returns: ``(len(percentiles),)`` values (``(..., len(percentiles))``).

        Example::

            >>> scm = load_scm("chain-3", "linear")
            >>> data = torch.arange(1.0, 10.0, dtype=torch.float64).repeat(3, 1).T
            >>> scm.intervention_values("x2", data)
            tensor([3., 5., 7.], dtype=torch.float64)
        """
        data = self._as_data(data, "data")
        col = data[..., self.index(variable)]
        q = torch.as_tensor(percentiles, dtype=torch.float64, device=data.device) / 100
        values = torch.quantile(col, q, dim=-1)
        values = values.movedim(0, -1)
        return values if decimals is None else torch.round(values, decimals=decimals)

    # ----------------------------------------------------------------- helpers

    def __repr__(self) -> str:
        return f"GroundTruthSCM({self.name!r}, {self.variant!r})"

    def _check_last_dim(self, t: Tensor, what: str) -> None:
        if t.dim() == 0 or t.shape[-1] != self.dim:
            raise ShapeError(
                f"{what} of {self} must have shape (..., {self.dim}) with columns "
                f"{self.variables}, got {tuple(t.shape)}"
            )

    def _as_data(self, t: Tensor, what: str) -> Tensor:
        t = _float64(t)
        self._check_last_dim(t, what)
        return t

    def _do_values(
        self, do: Mapping[str, InterventionValue] | None, u: Tensor
    ) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for var, value in (do or {}).items():
            self.index(var)
            t = _float64(value, u.device)
            try:
                out[var] = torch.broadcast_to(t, u.shape[:-1])
            except RuntimeError:
                raise ShapeError(
                    f"intervention value for '{var}' has shape {tuple(t.shape)}, "
                    f"which does not broadcast to the batch shape {tuple(u.shape[:-1])}"
                ) from None
        return out


def _float64(value: object, device: torch.device | None = None) -> Tensor:
    """A float64 tensor of ``value``; Python numbers never pass through float32."""
    if isinstance(value, Tensor):
        return value.to(device=device or value.device, dtype=torch.float64)
    return torch.as_tensor(value, dtype=torch.float64, device=device)


def load_scm(name: str, variant: str | None = None) -> GroundTruthSCM:
    """One SCM of Javaloy et al. (2023) by name and equation type.

    :param name: ``triangle``, ``simpson``, ``large-backdoor``, ``fork``,
        ``diamond``, ``collider``, ``chain-3`` (alias ``chain``), ``chain-4`` or
        ``chain-5`` (see :data:`CAUSAL_NF_SCMS`).
    :param variant: ``linear``, ``non-linear``, ``non-linear-2``, ``non-linear-3`` or
        ``sym-prod``; may be omitted where the SCM has a single variant.
    :raises KeyError: naming the unknown SCM or variant and listing the known ones.

    Example::

        >>> load_scm("diamond")
        GroundTruthSCM('diamond', 'non-linear')
        >>> sorted(CAUSAL_NF_SCMS["triangle"])
        ['linear', 'non-linear', 'non-linear-2']
    """
    key = name.lower().strip()
    key = _ALIASES.get(key, key)
    if key not in CAUSAL_NF_SCMS:
        raise KeyError(f"unknown SCM '{name}'; known: {sorted(CAUSAL_NF_SCMS)}")
    variants = CAUSAL_NF_SCMS[key]
    if variant is None:
        if len(variants) != 1:
            raise KeyError(f"SCM '{key}' has variants {list(variants)}; choose one")
        variant = variants[0]
    if variant not in variants:
        raise KeyError(
            f"SCM '{key}' has no variant '{variant}'; known: {list(variants)}"
        )
    return GroundTruthSCM(key, variant, SPECS[key, variant])
