"""Analysis: simulation under do, expectations, effects with common noise, ensembles."""

from __future__ import annotations

import math

import arviz as az
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_causalgen import StructuralCausalModel
from pyro_causalgen.analysis.effects import (
    average_treatment_effect,
    interventional_mean,
)
from pyro_causalgen.analysis.simulate import simulate
from pyro_causalgen.analysis.uncertainty import (
    EffectDraws,
    effect_over_members,
    fit_ensemble,
)
from pyro_causalgen.errors import UnknownSiteError


def linear_scm(slope: float = 2.0) -> StructuralCausalModel:
    """x ~ N(0, 1); y = slope * x + N(0, 1) (identity standardisation)."""
    scm = StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale").double()
    with torch.no_grad():
        scm.mechanism("y").net[0].weight.fill_(slope)
        scm.mechanism("y").net[0].bias.zero_()
    return scm


def test_simulate_records_intervened_values_and_checks_names():
    out = simulate(linear_scm(), {"x": 3.0}, n=4)
    assert torch.all(out["x"] == 3.0) and out["y"].shape == (4,)
    with pytest.raises(UnknownSiteError, match="'w'"):
        interventional_mean(linear_scm(), "w", {"x": 1.0}, n=4)


def test_interventional_mean_matches_the_closed_form():
    est = interventional_mean(linear_scm(), "y", {"x": 1.5}, n=100_000)
    assert abs(est.value - 3.0) < 5 * est.stderr
    assert est.stderr == pytest.approx(1 / math.sqrt(100_000), rel=0.05)


def test_common_noise_makes_linear_effects_exact_and_nonlinear_ones_precise():
    ate = average_treatment_effect(linear_scm(), "y", "x", 1.0, -1.0, n=1000)
    assert ate.value == pytest.approx(4.0, abs=1e-9) and ate.stderr < 1e-9
    # a nonlinear flow: the paired estimate's s.e. is far below that of two
    # independent arms (which is at least the outcome's spread / sqrt(n))
    scm = StructuralCausalModel(
        {"x": [], "y": ["x"]}, mechanism_kwargs={"hidden_features": (8,)}
    )
    paired = average_treatment_effect(scm, "y", "x", 0.1, 0.0, n=5000)
    arm = interventional_mean(scm, "y", {"x": 0.0}, n=5000)
    assert paired.stderr < 0.5 * arm.stderr * math.sqrt(2)


def test_repeated_effect_calls_use_fresh_noise():
    scm = StructuralCausalModel({"x": [], "y": ["x"]}, mechanism_kwargs={"bins": 4})
    a = average_treatment_effect(scm, "y", "x", 1.0, 0.0, n=50)
    b = average_treatment_effect(scm, "y", "x", 1.0, 0.0, n=50)
    assert a.value != b.value


def test_bootstrap_ensemble_gives_draws_that_export_to_arviz():
    torch.manual_seed(0)
    x = torch.randn(300)
    data = {"x": x, "y": 2 * x + torch.randn(300)}
    ens = fit_ensemble(
        lambda: StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale"),
        data,
        members=4,
        method="bootstrap",
        seed=0,
        epochs=60,
        lr=0.05,
        patience=None,
    )
    eff = effect_over_members(
        ens,
        lambda m: average_treatment_effect(m, "y", "x", 1.0, 0.0, n=200),
        "E[y | do(x=1)] - E[y | do(x=0)]",
    )
    assert eff.draws.shape == (4,) and len(set(eff.draws.tolist())) == 4
    lo, hi = eff.interval(0.9)
    assert lo < eff.mean < hi and abs(eff.mean - 2.0) < 0.3
    idata = eff.to_inference_data()
    summary = az.summary(idata, kind="stats")
    assert summary.loc["effect", "mean"] == pytest.approx(eff.mean, abs=1e-3)
    assert idata.posterior.attrs["query"].startswith("E[y | do(x=1)]")


def test_interval_is_percentile_by_default_and_student_t_when_asked():
    mc = torch.tensor([0.3, 0.4, 0.0])
    eff = EffectDraws("q", torch.tensor([1.0, 2.0, 3.0]), mc, "ensemble")
    # 5% and 95% percentiles of (1, 2, 3) by linear interpolation: 1.1 and 2.9
    assert eff.interval(0.9) == pytest.approx((1.1, 2.9), abs=1e-9)
    lo, hi = eff.interval(0.9, kind="t")
    # t quantile with 2 dof at 0.95 is 2.919986; sd of (1, 2, 3) is 1
    assert (lo, hi) == pytest.approx((2 - 2.919986, 2 + 2.919986), abs=1e-5)
    # statistical s.e. is the spread alone; Monte Carlo error of the mean apart:
    # sqrt((0.09 + 0.16 + 0) / 3 / 3) = sqrt(0.25) / 3
    assert eff.stderr == pytest.approx(1.0) and eff.mc_error == pytest.approx(0.5 / 3)
    attrs = eff.to_inference_data(prob=0.9).posterior.attrs
    assert attrs["interval"] == "90% interval, percentiles of 3 ensemble members"
    assert float(attrs["interval_lower"]) == pytest.approx(1.1)
    assert float(attrs["mc_stderr"]) == pytest.approx(0.5 / 3)
    with pytest.raises(ValueError, match="unknown interval kind"):
        eff.interval(0.9, kind="bca")
    with pytest.raises(ValueError, match="unknown method"):
        fit_ensemble(lambda: linear_scm(), {}, method="jackknife")


@pytest.mark.slow
def test_bootstrap_intervals_cover_the_truth_at_about_their_level():
    """90% intervals over 20 seeds: coverage >= 14/20 (1% binomial tail at 0.9)."""
    covered = 0
    for seed in range(20):
        g = torch.Generator().manual_seed(100 + seed)
        x = torch.randn(400, generator=g)
        data = {"x": x, "y": 1.5 * x + torch.randn(400, generator=g)}
        ens = fit_ensemble(
            lambda: StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale"),
            data,
            members=10,
            seed=seed,
            epochs=80,
            lr=0.05,
            patience=None,
        )
        eff = effect_over_members(
            ens, lambda m: average_treatment_effect(m, "y", "x", 1.0, 0.0, n=100), "ate"
        )
        lo, hi = eff.interval(0.9, kind="t")  # 10 members: percentiles too coarse
        covered += lo <= 1.5 <= hi
    assert covered >= 14


@pytest.mark.parametrize("guide", ["normal", "mvn", "laplace"])
def test_bayesian_posterior_of_an_effect_matches_the_sampling_error(guide):
    """Linear-Gaussian: posterior sd of the ATE ~ sigma / (sqrt(N) sd(x)) = 0.05."""
    from pyro_causalgen import fit
    from pyro_causalgen.analysis.bayesian import BayesianModel, fit_bayesian

    g = torch.Generator().manual_seed(4)
    x = torch.randn(400, generator=g)
    data = {"x": x, "y": 1.5 * x + torch.randn(400, generator=g)}
    scm = StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale")
    fit(scm, data, epochs=80, lr=0.05, patience=None, seed=0)
    bayes, losses = fit_bayesian(scm, data, steps=600, lr=0.01, seed=0, guide=guide)
    assert isinstance(bayes, BayesianModel)
    assert len(losses) == (1 if guide == "laplace" else 600)
    eff = effect_over_members(
        bayes.posterior_models(40),
        lambda m: average_treatment_effect(m, "y", "x", 1.0, 0.0, n=50),
        "ate",
        method="bayesian",
    )
    sd = eff.draws.std().item()
    assert 0.025 < sd < 0.1  # within a factor 2 of the sampling error 0.05
    assert abs(eff.mean - 1.5) < 4 * 0.05
    assert eff.to_inference_data().posterior.attrs["method"] == "bayesian"


def test_laplace_posterior_of_a_gaussian_mean_and_log_scale_is_the_fisher_one():
    """x ~ N(mu, s), s = exp(l), in standardised units z: the negative log joint
    sum(l + (z - mu)^2 / 2 s^2) + (mu^2 + l^2) / 2 has the Hessian
    [[N / s^2 + 1, 2 sum(z - mu) / s^2], [., 2 sum((z - mu) / s)^2 + 1]]; the Laplace
    covariance is its inverse, at whatever point the fit stopped."""
    from pyro_causalgen import fit
    from pyro_causalgen.analysis.bayesian import fit_bayesian

    g = torch.Generator().manual_seed(5)
    n = 400
    data = {"x": 3.0 + 2.0 * torch.randn(n, generator=g, dtype=torch.float64)}
    scm = StructuralCausalModel({"x": []}, mechanism="locscale").double()
    fit(scm, data, epochs=20, lr=0.05, patience=None, seed=0)
    bayes, _ = fit_bayesian(scm, data, guide="laplace")
    mech = scm.mechanism("x")
    s = mech.log_scale.exp().item()
    r = ((data["x"] - mech.value_loc) / mech.value_scale - mech.loc).detach()
    h = torch.tensor(
        [
            [n / s**2 + 1, 2 * r.sum() / s**2],
            [2 * r.sum() / s**2, 2 * (r / s).square().sum() + 1],
        ],
        dtype=torch.float64,
    )
    cov = bayes.guide.get_posterior().covariance_matrix
    assert torch.allclose(cov, h.inverse(), rtol=1e-6, atol=1e-12)
    # about the sampling error of a mean and a log-sd of 400 draws
    assert 0.045 < cov[0, 0].sqrt() < 0.055 and 0.03 < cov[1, 1].sqrt() < 0.04


def test_evidence_prior_satisfies_mackays_fixed_point():
    """The evidence-maximising prior precision alpha of a Laplace posterior solves
    alpha |theta|^2 = gamma = sum_i l_i / (l_i + alpha) over the likelihood Hessian's
    eigenvalues l_i (MacKay 1992), up to the grid's factor 10^(1/20) = 1.12; the
    likelihood Hessian comes from exact double-backward autograd here, independently
    of the finite differences inside ``fit_bayesian``."""
    import pyro.poutine as poutine
    from torch.func import functional_call

    from pyro_causalgen import fit
    from pyro_causalgen.analysis.bayesian import PREFIX, fit_bayesian

    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, generator=g, dtype=torch.float64)
    data = {"x": x, "y": 1.5 * x + torch.randn(300, generator=g, dtype=torch.float64)}
    scm = StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale").double()
    fit(scm, data, epochs=60, lr=0.05, patience=None, seed=0)
    bayes, _ = fit_bayesian(scm, data, guide="laplace", prior_scale="evidence")
    alpha = bayes.prior_scale**-2
    params = dict(scm.named_parameters())
    names = bayes.parameter_names()
    theta = torch.cat([params[n].detach().reshape(-1) for n in names])

    def nll(flat):
        values = dict(zip(names, flat.split([params[n].numel() for n in names])))
        values = {n: v.view_as(params[n]) for n, v in values.items()}

        def program():
            return functional_call(scm, values, (), {"n": 300})

        trace = poutine.trace(poutine.condition(program, data=data)).get_trace()
        return -trace.log_prob_sum()

    lik = torch.linalg.eigvalsh(torch.autograd.functional.hessian(nll, theta))
    assert lik.min() > 0  # a well-fitted linear model: no negative curvature
    gamma = (lik / (lik + alpha)).sum()
    ratio = alpha * theta.square().sum() / gamma
    assert 1 / 1.2 < ratio < 1.2, (alpha, ratio)
    assert PREFIX + names[0] in bayes.guide._unconstrained_shapes


def test_last_layer_posterior_keeps_hidden_weights_and_names_bad_choices(monkeypatch):
    from pyro_causalgen import fit
    from pyro_causalgen.analysis import bayesian
    from pyro_causalgen.analysis.bayesian import (
        BayesianModel,
        fit_bayesian,
        output_layer_parameters,
    )

    scm = StructuralCausalModel(
        {"x": [], "y": ["x"]},
        mechanism_kwargs={"transforms": 1, "hidden_features": (8, 8), "affine": True},
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, generator=g)
    data = {"x": x, "y": x**2 + 0.5 * torch.randn(200, generator=g)}
    fit(scm, data, epochs=2, seed=0)
    last = output_layer_parameters(scm)
    assert sorted(last) == [
        "stacks.0.affine_biases.2",
        "stacks.0.affine_weights.2",
        "stacks.0.biases.2",
        "stacks.0.root_affine",
        "stacks.0.root_phi",
        "stacks.0.weights.2",
    ]
    before = {n: p.detach().clone() for n, p in scm.named_parameters()}
    bayes, _ = fit_bayesian(scm, data, random="last", guide="lowrank", steps=20)
    assert bayes.parameter_names() == last
    draws = bayes.posterior_models(2)
    assert set(draws[0].params) == {*last}
    assert not torch.equal(draws[0].params[last[1]], draws[1].params[last[1]])
    for name, p in scm.named_parameters():  # the model itself is untouched
        assert torch.equal(p, before[name]) and p.requires_grad, name
    with pytest.raises(KeyError, match="no trainable parameters"):
        BayesianModel(scm, random=["stacks.0.nope"])
    with pytest.raises(ValueError, match="unknown guide"):
        fit_bayesian(scm, data, guide="flow", steps=1)
    with pytest.raises(ValueError, match="'evidence' with guide='laplace'"):
        fit_bayesian(scm, data, prior_scale="evidence", steps=1)
    n_all = sum(p.numel() for p in scm.parameters())
    monkeypatch.setattr(bayesian, "LAPLACE_MAX_PARAMETERS", n_all - 1)
    with pytest.raises(ValueError, match=f"Laplace posterior over {n_all} param"):
        fit_bayesian(scm, data, guide="laplace")


def test_guard_warns_for_a_confounded_effect_and_passes_an_identified_one():
    """y <- h -> x with h latent: P(y | do(x)) is not identifiable (bow arc)."""
    import pyro
    import pyro.distributions as dist

    from pyro_causalgen import NonIdentifiableWarning, Unidentifiable

    def confounded(n=None):
        with pyro.plate("units", n or 1):
            h = pyro.sample("h", dist.Normal(0.0, 1.0))
            x = pyro.sample("x", dist.Normal(h, 1.0))
            return pyro.sample("y", dist.Normal(x + h, 1.0))

    with pytest.warns(NonIdentifiableWarning, match="hedge"):
        est = interventional_mean(
            confounded, "y", {"x": 1.0}, n=100, observed=["x", "y"]
        )
    assert est.identifiable is False
    with pytest.raises(Unidentifiable):
        average_treatment_effect(
            confounded, "y", "x", 1.0, 0.0, n=10, observed=["x", "y"], strict=True
        )
    # observing the confounder makes it identifiable (back-door), no warning
    est = interventional_mean(
        confounded, "y", {"x": 1.0}, n=100, observed=["h", "x", "y"]
    )
    assert est.identifiable is True
    assert interventional_mean(confounded, "y", {"x": 1.0}, n=10).identifiable is None


def test_unit_level_effects_cate_and_ett_are_exact_on_a_heterogeneous_scm():
    """y = t * (1 + z) + noise: unit effect of t (1 vs 0) is exactly 1 + z_i."""
    from pyro_causalgen.analysis import (
        conditional_average_treatment_effect,
        effect_of_treatment_on_the_treated,
        unit_level_effects,
    )

    def model(n):
        with pyro.plate("units", n):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            t = pyro.sample("t", dist.Normal(z, 1.0))
            return pyro.sample("y", dist.Normal(t * (1 + z), 0.5))

    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, generator=g)
    t = torch.where(torch.rand(200, generator=g) < 0.5, 1.0, 0.0)
    y = t * (1 + z) + 0.5 * torch.randn(200, generator=g)
    data = {"z": z, "t": t, "y": y}
    effects = unit_level_effects(model, data, "y", "t", 1.0, 0.0, 200)
    assert torch.allclose(effects, 1 + z, atol=1e-5)
    old = z > 1.0
    cate = conditional_average_treatment_effect(
        model, data, "y", "t", 1.0, 0.0, old, 200
    )
    assert cate.value == pytest.approx((1 + z[old]).mean().item(), abs=1e-5)
    ett = effect_of_treatment_on_the_treated(model, data, "y", "t", 1.0, 0.0, 200)
    assert ett.value == pytest.approx((1 + z[t == 1]).mean().item(), abs=1e-5)
    with pytest.raises(ValueError, match="no observed unit has t == 2.0"):
        effect_of_treatment_on_the_treated(model, data, "y", "t", 2.0, 0.0, 200)
