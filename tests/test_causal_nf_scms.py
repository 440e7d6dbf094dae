"""The ground-truth SCMs of Javaloy et al. (2023): exact inverse, structure, density.

Every SCM/variant of :mod:`pyro_causalgen.datasets.causal_nf` is checked for: exact
abduction (``abduct(forward(u)) == u`` to 1e-8 in float64), the graph (noise of a
variable moves exactly its descendants; the autograd Jacobian has the graph's
ancestral pattern), interventions (the intervened variable equals its value, the
non-descendants keep their values for the same noise), counterfactuals (an empty or a
consistent intervention returns the factual rows), and the density (against the
autograd Jacobian everywhere, against the multivariate normal for the linear SCMs, and
normalisation by importance sampling in three dimensions).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyro_causalgen.datasets.causal_nf import CAUSAL_NF_SCMS, GroundTruthSCM, load_scm
from pyro_causalgen.errors import ShapeError, UnknownSiteError
from pyro_causalgen.scm import StructuralCausalModel

ALL = [(name, v) for name, variants in CAUSAL_NF_SCMS.items() for v in variants]
LINEAR = [(name, v) for name, v in ALL if v == "linear"]
IDS = [f"{name}-{v}" for name, v in ALL]

#: Variables with their parents, read from the paper's adjacency matrices.
PAPER_GRAPHS = {
    "triangle": {"x2": ["x1"], "x3": ["x1", "x2"]},
    "simpson/non-linear": {"x2": ["x1"], "x3": ["x1", "x2"], "x4": ["x3"]},
    "simpson/sym-prod": {"x2": ["x1"], "x3": ["x1", "x2"], "x4": ["x1"]},
    "large-backdoor": {
        "x2": ["x1"],
        "x3": ["x1"],
        "x4": ["x2"],
        "x5": ["x3"],
        "x6": ["x4"],
        "x7": ["x5"],
        "x8": ["x6"],
        "x9": ["x7", "x8"],
    },
    "fork": {"x3": ["x1", "x2"], "x4": ["x3"]},
    "diamond": {"x2": ["x1"], "x3": ["x1", "x2"], "x4": ["x2", "x3"]},
    "collider": {"x3": ["x1", "x2"]},
    "chain-3": {"x2": ["x1"], "x3": ["x2"]},
    "chain-4": {"x2": ["x1"], "x3": ["x2"], "x4": ["x3"]},
    "chain-5": {"x2": ["x1"], "x3": ["x2"], "x4": ["x3"], "x5": ["x4"]},
}


@pytest.fixture(params=ALL, ids=IDS)
def scm(request: pytest.FixtureRequest) -> GroundTruthSCM:
    return load_scm(*request.param)


def _noise(scm: GroundTruthSCM, n: int, seed: int, device=None) -> torch.Tensor:
    gen = torch.Generator(device=device or "cpu").manual_seed(seed)
    return scm.sample_noise(n, gen)


def _batch_jacobian(fn, z: torch.Tensor) -> torch.Tensor:
    """``(n, d) -> (n, d, d)`` Jacobians of a row-wise map, one backward per output."""
    z = z.detach().requires_grad_(True)
    out = fn(z)
    rows = [
        torch.autograd.grad(out[:, i].sum(), z, retain_graph=True)[0]
        for i in range(out.shape[-1])
    ]
    return torch.stack(rows, -2)


def _ancestors(scm: GroundTruthSCM, v: str) -> set[str]:
    return {a for a in scm.variables if v in scm.descendants(a)}


# ------------------------------------------------------------------ registry / graph


def test_registry_lists_the_papers_scms():
    assert CAUSAL_NF_SCMS == {
        "triangle": ("linear", "non-linear", "non-linear-2"),
        "simpson": ("non-linear", "sym-prod"),
        "large-backdoor": ("non-linear",),
        "fork": ("linear", "non-linear"),
        "diamond": ("non-linear",),
        "collider": ("linear",),
        "chain-3": ("linear", "non-linear", "non-linear-2", "non-linear-3"),
        "chain-4": ("linear",),
        "chain-5": ("linear",),
    }
    assert load_scm("chain", "linear").name == "chain-3"
    assert load_scm("large-backdoor").variant == "non-linear"


def test_parents_are_the_papers_graph(scm):
    graph = PAPER_GRAPHS.get(f"{scm.name}/{scm.variant}", PAPER_GRAPHS.get(scm.name))
    expected = {v: graph.get(v, []) for v in scm.variables}
    assert scm.parents == expected
    assert scm.variables == [f"x{i + 1}" for i in range(scm.dim)]
    assert set(scm.intervention_targets) <= set(scm.variables)


def test_parents_build_a_structural_causal_model(scm):
    model = StructuralCausalModel(scm.parents, mechanism="locscale")
    assert model.order == scm.variables


def test_unknown_names_are_reported():
    with pytest.raises(KeyError, match="'pentagon'"):
        load_scm("pentagon", "linear")
    with pytest.raises(KeyError, match="'cubic'"):
        load_scm("fork", "cubic")
    with pytest.raises(KeyError, match="choose one"):
        load_scm("triangle")
    scm = load_scm("triangle", "linear")
    with pytest.raises(UnknownSiteError, match="'x7'"):
        scm.sample(3, seed=0, do={"x7": 1.0})
    with pytest.raises(ShapeError, match="'x2'"):
        scm.sample(3, seed=0, do={"x2": torch.zeros(4)})
    with pytest.raises(ShapeError, match=r"\(\.\.\., 3\)"):
        scm.abduct(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="seed or generator"):
        scm.sample(3, seed=0, generator=torch.Generator())


# ------------------------------------------------------------------ exact inverse


def test_abduct_inverts_forward(scm):
    u = _noise(scm, 2000, seed=1)
    x = scm.forward(u)
    assert x.dtype == torch.float64 and torch.isfinite(x).all()
    assert (scm.abduct(x) - u).abs().max().item() < 1e-8
    # and the other way round, relative to the size of x
    back = scm.forward(scm.abduct(x))
    assert ((back - x).abs() / (1 + x.abs())).max().item() < 1e-10


def test_batch_shapes_are_kept(scm):
    u = _noise(scm, 6, seed=2).reshape(2, 3, scm.dim)
    x = scm.forward(u)
    assert x.shape == (2, 3, scm.dim)
    assert torch.equal(x.reshape(6, -1), scm.forward(u.reshape(6, -1)))
    assert scm.log_prob(x).shape == (2, 3)
    assert scm.forward(u[0, 0]).shape == (scm.dim,)


# ------------------------------------------------------------------ structure


def test_noise_moves_exactly_the_descendants(scm):
    u = _noise(scm, 200, seed=3)
    x = scm.forward(u)
    for j, v in enumerate(scm.variables):
        u2 = u.clone()
        if scm.noise == "uniform":  # stay inside (1e-6, 1)
            u2[:, j] = 1e-6 + torch.remainder(u[:, j] + 0.37 - 1e-6, 1 - 1e-6)
        else:
            u2[:, j] = u[:, j] + 0.5
        x2 = scm.forward(u2)
        moved = {v, *scm.descendants(v)}
        for k, w in enumerate(scm.variables):
            if w in moved:
                # most rows move (a saturated sigmoid may absorb a few)
                assert (x2[:, k] != x[:, k]).float().mean() > 0.5, (v, w)
            else:
                assert torch.equal(x2[:, k], x[:, k]), (v, w)


def test_jacobian_has_the_ancestral_pattern(scm):
    u = _noise(scm, 16, seed=4)
    jac = _batch_jacobian(scm.forward, u)
    for i, v in enumerate(scm.variables):
        anc = _ancestors(scm, v) | {v}
        for j, w in enumerate(scm.variables):
            if w in anc:
                assert (jac[:, i, j] != 0).float().mean() > 0.5, (v, w)
            else:
                assert (jac[:, i, j] == 0).all(), (v, w)


# ------------------------------------------------------------------ density


def test_log_prob_matches_autograd_jacobian(scm):
    u = _noise(scm, 64, seed=5)
    x = scm.forward(u)
    # log p(x) = log p_u(abduct(x)) + log |det d abduct / dx|, both by autograd
    _, logdet = torch.linalg.slogdet(_batch_jacobian(scm.abduct, x))
    expected = scm.noise_log_prob(u) + logdet
    assert torch.allclose(scm.log_prob(x), expected, rtol=1e-9, atol=1e-9)
    _, logdet_fwd = torch.linalg.slogdet(_batch_jacobian(scm.forward, u))
    assert torch.allclose(scm.log_abs_det_jacobian(u), logdet_fwd, atol=1e-9)


@pytest.mark.parametrize("name,variant", LINEAR, ids=[n for n, _ in LINEAR])
def test_linear_scms_are_exactly_gaussian(name, variant):
    scm = load_scm(name, variant)
    zero = torch.zeros(1, scm.dim, dtype=torch.float64)
    loc = scm.forward(zero)[0]
    a = _batch_jacobian(scm.forward, zero)[0]  # x = loc + A u
    mvn = torch.distributions.MultivariateNormal(loc, a @ a.T)
    x = scm.sample(100, seed=6)
    assert torch.allclose(scm.log_prob(x), mvn.log_prob(x), rtol=1e-10, atol=1e-10)
    # interventional mean of a descendant, closed form by linearity
    v = scm.intervention_targets[0]
    value = 1.5
    a_int = scm.forward(zero, do={v: value})[0]
    xs = scm.sample(20_000, seed=7, do={v: value})
    se = xs.std(0) / math.sqrt(len(xs))
    assert ((xs.mean(0) - a_int).abs() <= 5 * se + 1e-12).all()


THREE_D = [(n, v) for n, v in ALL if len(load_scm(n, v).variables) == 3]


@pytest.mark.parametrize("name,variant", THREE_D, ids=[f"{n}-{v}" for n, v in THREE_D])
def test_density_integrates_to_one(name, variant):
    """Importance sampling with a wide Student-t proposal: ``E_g[p/g] = 1``.

    Error budget: 5 Monte-Carlo standard errors of the weights' mean (a wrong
    Jacobian term typically shifts the integral by a factor, far outside it).
    """
    scm = load_scm(name, variant)
    gen = torch.Generator().manual_seed(8)
    x = scm.sample(4000, generator=gen)
    loc, scale = x.mean(0), torch.linalg.cholesky(torch.cov(x.T)) * 2.0
    proposal = torch.distributions.MultivariateNormal(
        torch.zeros(3, dtype=torch.float64), scale_tril=scale
    )
    n, df = 20_000, 3.0
    z = proposal.sample((n,))
    w = torch.distributions.Chi2(torch.tensor(df, dtype=torch.float64)).sample((n,))
    y = loc + z / torch.sqrt(w / df)[:, None]
    # multivariate t log density
    m = torch.linalg.solve_triangular(scale, (y - loc).T, upper=False).pow(2).sum(0)
    log_g = (
        math.lgamma((df + 3) / 2)
        - math.lgamma(df / 2)
        - 1.5 * math.log(df * math.pi)
        - torch.log(torch.diagonal(scale)).sum()
        - (df + 3) / 2 * torch.log1p(m / df)
    )
    ratio = torch.exp(scm.log_prob(y) - log_g)
    assert not ratio.isnan().any()
    se = ratio.std().item() / math.sqrt(n)
    assert abs(ratio.mean().item() - 1.0) < 5 * se, (ratio.mean().item(), se)


def test_log_prob_outside_the_support_is_minus_inf():
    scm = load_scm("chain-3", "non-linear-2")  # x1 = sigmoid(u1) in (0, 1)
    x = torch.tensor([[1.5, 0.0, 0.0], [-0.2, 0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(scm.log_prob(x), torch.full((2,), -math.inf).double())
    lb = load_scm("large-backdoor")
    u = lb.sample_noise(1000, torch.Generator().manual_seed(0))
    assert ((u >= 1e-6) & (u < 1)).all()
    assert torch.isfinite(lb.log_prob(lb.forward(u))).all()


# ------------------------------------------------------------------ interventions


def test_interventions_set_the_value_and_keep_non_descendants(scm):
    x_obs = scm.sample(300, seed=9)
    per_row = torch.linspace(-1.0, 1.0, 300, dtype=torch.float64)
    for v in scm.variables:
        i = scm.index(v)
        value = x_obs[:, i].median().item()
        for val in (value, per_row * 0.1 + value):
            x = scm.sample(300, seed=9, do={v: val})
            expected = torch.as_tensor(val, dtype=torch.float64).expand(300)
            assert torch.equal(x[:, i], expected)
            for k, w in enumerate(scm.variables):
                if w != v and w not in scm.descendants(v):
                    assert torch.equal(x[:, k], x_obs[:, k]), (v, w)


def test_interventional_mean_matches_a_hand_computation():
    # fork non-linear, do(x3 = 1): x4 = 20 sigmoid(1 - 1/2) + u4
    scm = load_scm("fork", "non-linear")
    x = scm.sample(20_000, seed=10, do={"x3": 1.0})
    se = x[:, 3].std().item() / math.sqrt(len(x))
    assert abs(x[:, 3].mean().item() - 20 * torch.sigmoid(torch.tensor(0.5)).item()) < (
        5 * se
    )


# ------------------------------------------------------------------ counterfactuals


def test_counterfactual_without_intervention_is_factual(scm):
    x = scm.sample(500, seed=11)
    assert torch.allclose(scm.counterfactual(x, {}), x, rtol=1e-10, atol=1e-10)
    # consistency: intervening on each unit's own factual value changes nothing
    for i, v in enumerate(scm.variables):
        cf = scm.counterfactual(x, {v: x[:, i]})
        assert torch.allclose(cf, x, rtol=1e-10, atol=1e-10), v


def test_counterfactual_keeps_non_descendants_and_sets_the_value(scm):
    x = scm.sample(200, seed=12)
    for v in scm.intervention_targets:
        i = scm.index(v)
        value = scm.intervention_values(v, x)[1].item()
        cf = scm.counterfactual(x, {v: value})
        assert (cf[:, i] == value).all()
        for k, w in enumerate(scm.variables):
            if w != v and w not in scm.descendants(v):
                assert torch.allclose(cf[:, k], x[:, k], rtol=1e-12, atol=1e-12)


def test_counterfactual_by_hand_on_the_linear_chain():
    # x2 = 10 x1 - u2, x3 = 0.25 x2 + 2 u3: do(x1 = a) moves x2 by 10 (a - x1)
    scm = load_scm("chain-3", "linear")
    x = scm.sample(50, seed=13)
    a = 0.7
    cf = scm.counterfactual(x, {"x1": a})
    shift = 10 * (a - x[:, 0])
    expected = torch.stack([torch.full_like(shift, a), x[:, 1] + shift, x[:, 2]], -1)
    expected[:, 2] += 0.25 * shift
    assert torch.allclose(cf, expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ percentiles, RNG


def test_intervention_values_are_rounded_percentiles():
    scm = load_scm("simpson", "non-linear")
    data = scm.sample(1001, seed=14)
    for v in scm.intervention_targets:
        col = data[:, scm.index(v)].numpy()
        expected = np.round(np.percentile(col, [25, 50, 75]), 2)
        got = scm.intervention_values(v, data)
        assert np.allclose(got.numpy(), expected, atol=1e-12)
        raw = scm.intervention_values(v, data, percentiles=(10, 90), decimals=None)
        assert np.allclose(raw.numpy(), np.percentile(col, [10, 90]))
    with pytest.raises(UnknownSiteError, match="'y'"):
        scm.intervention_values("y", data)


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone():
    scm = load_scm("diamond")
    state = torch.random.get_rng_state()
    a = scm.sample(10, seed=15)
    b = scm.sample(10, generator=torch.Generator().manual_seed(15))
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(3)
    c = scm.sample(10)
    torch.manual_seed(3)
    assert torch.equal(c, scm.sample(10))


def test_dict_round_trip_and_dtype():
    scm = load_scm("fork", "linear")
    x = scm.sample(5, seed=16)
    d = scm.to_dict(x)
    assert list(d) == scm.variables
    assert torch.equal(
        scm.from_dict({k: v.float() for k, v in d.items()}), x.float().double()
    )
    assert scm.abduct(x.float()).dtype == torch.float64


def test_samplers_follow_the_device(device):
    scm = load_scm("triangle", "non-linear")
    gen = torch.Generator(device=device).manual_seed(0)
    x = scm.sample(8, generator=gen, do={"x1": torch.zeros(8)})  # value on CPU
    assert x.device.type == device.type
    assert scm.log_prob(x).device.type == device.type
    cf = scm.counterfactual(x, {"x2": 1.0})
    assert cf.device.type == device.type
    assert scm.sample(4, seed=0, device=device).device.type == device.type
