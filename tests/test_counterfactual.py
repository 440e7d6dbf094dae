"""Twin- and multi-world counterfactuals: closed forms, shared noise, misuse, shapes."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from chirho.interventional.handlers import do as chirho_do

from pyro_causalgen import StructuralCausalModel, do
from pyro_causalgen.errors import ShapeError, UnknownSiteError
from pyro_causalgen.handlers import (
    CounterfactualError,
    MultiWorldCounterfactual,
    NoiseRepresentationError,
    TwinWorldCounterfactual,
    multi_world,
    twin_world,
    world_value,
)
from pyro_causalgen.infer.counterfactual import counterfactual
from pyro_causalgen.testing import LinearGaussian, assert_close, standard_error

F64 = torch.float64


def lg_data(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    x = torch.randn(n, dtype=F64, device=device)
    y = 2 * x + 0.5 * torch.randn(n, dtype=F64, device=device)
    z = 3 * x - y + torch.randn(n, dtype=F64, device=device)
    return {"x": x, "y": y, "z": z}


def locscale_scm(device: torch.device) -> StructuralCausalModel:
    """The same linear-Gaussian SCM with LocScaleMechanisms and a non-trivial
    standardisation, so the MechanismDistribution path is exercised."""
    scm = StructuralCausalModel(
        {"x": [], "y": ["x"], "z": ["x", "y"]}, mechanism="locscale"
    ).to(device=device, dtype=F64)
    with torch.no_grad():
        my, mz = scm.mechanism("y"), scm.mechanism("z")
        # standardised space: y_std = (y - 1) / 2, x_std = (x - 0.5) / 3
        my.value_loc.fill_(1.0), my.value_scale.fill_(2.0)
        my.context_loc.fill_(0.5), my.context_scale.fill_(3.0)
        # y = 1 + 2 * (w (x - .5)/3 + b + s e)  ==  2x + 0.5 e
        my.net[0].weight.fill_(3.0), my.net[0].bias.fill_(-0.5 + 0.5)
        my.log_scale.fill_(math.log(0.25))
        mz.net[0].weight.copy_(torch.tensor([[3.0, -1.0]])), mz.net[0].bias.zero_()
    return scm


@pytest.mark.parametrize("kind", ["plain_normal", "locscale_mechanism"])
def test_linear_gaussian_closed_form_exact(kind, device):
    model = (
        LinearGaussian().to(device=device, dtype=F64)
        if kind == "plain_normal"
        else locscale_scm(device)
    )
    n = 50
    d = lg_data(n, device)
    a = torch.linspace(-2, 2, n, dtype=F64, device=device)
    # do(y = a): z' = 3x - a + e_z = z + y - a
    out = counterfactual(model, d, {"y": a}, n)
    assert_close(out["factual"]["z"], d["z"], 1e-12, "factual z")
    assert_close(out["counterfactual"]["y"], a, 1e-12, "cf y")
    assert_close(out["counterfactual"]["z"], d["z"] + d["y"] - a, 1e-6, "cf z")
    assert_close(out["counterfactual"]["x"], d["x"], 0.0, "cf x (upstream)")
    # do(x = a): y' = 2a + (y - 2x), z' = 3a - y' + (z - 3x + y)
    out = counterfactual(model, d, {"x": a}, n)
    y_cf = 2 * a + d["y"] - 2 * d["x"]
    assert_close(out["counterfactual"]["y"], y_cf, 1e-6, "cf y")
    assert_close(
        out["counterfactual"]["z"], 3 * a - y_cf + d["z"] - 3 * d["x"] + d["y"]
    )
    assert out["counterfactual"]["z"].device.type == device.type


def test_unobserved_downstream_site_shares_its_noise(device):
    """z is not observed: each call draws e_z, but z' - z = y - a exactly (a = 0)."""
    model = LinearGaussian().to(device=device, dtype=F64)
    d = lg_data(20, device)
    obs = {"x": d["x"], "y": d["y"]}
    draws = [counterfactual(model, obs, {"y": 0.0}, 20) for _ in range(2)]
    for out in draws:
        diff = out["counterfactual"]["z"] - out["factual"]["z"]
        assert_close(diff, d["y"], 1e-12, "z' - z")
    assert not torch.allclose(draws[0]["factual"]["z"], draws[1]["factual"]["z"])


def test_latent_parent_gives_posterior_predictive_and_exact_z():
    """y latent, x and z observed. do(x=a): z' = z - x + a exactly in every draw;
    y' = 2a + 0.5 e_y with e_y | (z - x = r) ~ N(-0.4 r, 0.8)."""
    n, a = 4000, 1.0
    model = LinearGaussian().double()
    x = torch.zeros(n, dtype=F64)
    z = torch.full((n,), 1.25, dtype=F64)
    out = counterfactual(
        model, {"x": x, "z": z}, {"x": a}, n, abduction="importance", num_particles=512
    )
    assert_close(out["counterfactual"]["z"], z - x + a, 1e-9, "cf z")
    y_cf = out["counterfactual"]["y"]
    mean, var = 2 * a + 0.5 * (-0.4 * 1.25), 0.25 * 0.8
    assert abs(y_cf.mean().item() - mean) < 5 * math.sqrt(var / n) + 0.01
    assert abs(y_cf.var().item() - var) < 5 * var * math.sqrt(2 / n) + 0.01


def test_empty_intervention_and_unobserved_model():
    model = LinearGaussian().double()
    out = counterfactual(model, {}, {}, 5)
    for site in "xyz":
        assert torch.equal(out["factual"][site], out["counterfactual"][site])
    out = counterfactual(model, {}, {"x": 1.0}, 5)
    assert torch.equal(out["counterfactual"]["x"], torch.ones(5, dtype=F64))
    diff = out["counterfactual"]["y"] - out["factual"]["y"]
    assert_close(diff, 2 * (1.0 - out["factual"]["x"]), 1e-12)


def test_shift_stochastic_and_chirho_do():
    model = LinearGaussian().double()
    d = lg_data(10, torch.device("cpu"))
    out = counterfactual(model, d, {"y": lambda y: y + 1.0}, 10)
    assert_close(out["counterfactual"]["z"], d["z"] - 1.0, 1e-12)
    tr_handler = TwinWorldCounterfactual(d)
    with tr_handler:
        tr = poutine.trace(do(model, {"y": dist.Normal(5.0, 1e-3)})).get_trace(10)
    assert "do(y)" in tr.nodes and tr.nodes["do(y)"]["value"].shape == (10,)
    y_cf = tr_handler.world_values("counterfactual")["y"]
    assert_close(y_cf, tr.nodes["do(y)"]["value"], 0.0)
    # ChiRho's do composes: same answer as ours
    h1, h2 = TwinWorldCounterfactual(d), TwinWorldCounterfactual(d)
    h1(chirho_do(model, {"y": torch.tensor(0.0, dtype=F64)}))(10)
    h2(do(model, {"y": 0.0}))(10)
    assert torch.equal(h1.values["z"], h2.values["z"])


def test_worlds_are_named_and_left_of_all_plates():
    def model():
        with pyro.plate("a", 3, dim=-1), pyro.plate("b", 2, dim=-2):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            return pyro.sample("y", dist.Normal(x, 1.0))

    with TwinWorldCounterfactual(interventions={"x": 0.0}) as cf:
        tr = poutine.trace(model).get_trace()
    assert cf.world_info.dim == -3 and cf.world_info.names == (
        "factual",
        "counterfactual",
    )
    assert tr.nodes["y"]["value"].shape == (2, 2, 3)
    assert tr.nodes["u(y)"]["value"].shape == (2, 3)  # noise is never world-indexed
    assert tr.nodes["u(y)"]["infer"]["causalgen_noise"]
    y_f = world_value(tr, "y", "factual")
    y_cf = world_value(tr, "y", "counterfactual")
    assert_close(y_cf - y_f, -world_value(tr, "x", "factual"), 1e-6)
    with pytest.raises(CounterfactualError, match="unknown world 'other'"):
        world_value(tr, "y", "other")
    # an explicit plate depth moves the world dim
    with TwinWorldCounterfactual(interventions={"x": 0.0}, max_plate_nesting=4) as cf:
        model()
    assert cf.world_info.dim == -5


def test_plate_deeper_than_world_dim_raises():
    def model():
        with pyro.plate("a", 3, dim=-1):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
        with pyro.plate("b", 2, dim=-2), pyro.plate("a2", 3, dim=-1):
            pyro.sample("y", dist.Normal(x, 1.0))

    with pytest.raises(
        ShapeError, match="site 'a2' is inside 2 nested plates.*max_plate_nesting=2"
    ):
        twin_world(model, interventions={"x": 0.0})()
    twin_world(model, interventions={"x": 0.0}, max_plate_nesting=2)()


def test_multi_world_closed_form_and_linear_cost():
    model = LinearGaussian().double()
    d = lg_data(8, torch.device("cpu"))
    worlds = {"y=0": {"y": 0.0}, "y=1": {"y": 1.0}, "x=1,y=2": {"x": 1.0, "y": 2.0}}
    out = counterfactual(model, d, worlds, 8)
    assert list(out) == ["factual", "y=0", "y=1", "x=1,y=2"]
    for w, a in (("y=0", 0.0), ("y=1", 1.0), ("x=1,y=2", 2.0)):
        x = 1.0 if w == "x=1,y=2" else d["x"]
        z = 3 * x - a + (d["z"] - 3 * d["x"] + d["y"])
        assert_close(out[w]["z"], z * torch.ones(8, dtype=F64), 1e-6, w)
    with MultiWorldCounterfactual(worlds, d) as mw:
        z = model(8)["z"]
    assert z.shape == (4, 8)  # 1 + 3 worlds, not 2^3
    assert mw.world_info.names[0] == "factual"
    assert multi_world(model, worlds, d)(8)["z"].shape == (4, 8)


def test_handler_order_and_interventions_given_to_the_handler_agree():
    model = LinearGaussian().double()
    d = lg_data(6, torch.device("cpu"))
    h = [TwinWorldCounterfactual(d) for _ in range(2)] + [
        TwinWorldCounterfactual(d, {"y": 0.5})
    ]
    h[0](do(model, {"y": 0.5}))(6)
    do(h[1](model), {"y": 0.5})(6)
    h[2](model)(6)
    ref = h[0].world_values("counterfactual")
    for other in h[1:]:
        for site, v in other.world_values("counterfactual").items():
            assert torch.equal(v, ref[site]), site


def test_replay_reuses_latent_noise():
    model = LinearGaussian().double()
    cf_model = twin_world(model, {"x": torch.zeros(4, dtype=F64)}, {"x": 1.0})
    tr = poutine.trace(cf_model).get_trace(4)
    tr2 = poutine.trace(poutine.replay(cf_model, trace=tr)).get_trace(4)
    assert torch.equal(tr.nodes["z"]["value"], tr2.nodes["z"]["value"])
    assert set(tr.nodes) >= {"u(y)", "u(z)"} and tr.nodes["u(x)"]["is_observed"]


def test_misuse_raises_and_names_the_site():
    def with_obs():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(x, 1.0), obs=torch.tensor(1.0))

    with pytest.raises(CounterfactualError, match="site 'y' is observed with obs="):
        twin_world(with_obs)()
    model = LinearGaussian()
    cond = poutine.condition(model, {"y": torch.zeros(3)})
    with pytest.raises(CounterfactualError, match="site 'y'"):
        twin_world(cond, interventions={"x": 0.0})(3)
    with pytest.raises(CounterfactualError, match="site 'y'.*outside"):
        poutine.condition(twin_world(model, interventions={"x": 0.0}), {"y": 0.0})(3)
    with pytest.raises(UnknownSiteError, match=r"\['w'\].*\['x', 'y', 'z'\]"):
        counterfactual(model, {}, {"w": 1.0}, 3)
    with pytest.raises(UnknownSiteError, match="observation on"):
        counterfactual(model, {"q": torch.zeros(3)}, {"x": 1.0}, 3)
    with pytest.raises(ShapeError, match="site 'x' has shape"):
        counterfactual(model, {"x": torch.zeros(4)}, {"x": 1.0}, 3)

    def gamma_model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("g", dist.Gamma(x.exp(), 1.0))

    with pytest.raises(NoiseRepresentationError, match="site 'g': Gamma"):
        twin_world(gamma_model, interventions={"x": 0.0})()


def test_factual_log_density_equals_the_model():
    model = LinearGaussian().double()
    d = lg_data(30, torch.device("cpu"))
    tr = poutine.trace(twin_world(model, d, {"x": 3.0})).get_trace(30)
    expected = poutine.trace(poutine.condition(model, d)).get_trace(30).log_prob_sum()
    assert_close(tr.log_prob_sum(), expected, 1e-9, "log p(obs)")


def test_statistics_of_repeated_calls_match_the_counterfactual_posterior():
    """z unobserved: z' | (x, y), do(y=0) ~ N(3x, 1); check the mean over units."""
    n = 2000
    model = LinearGaussian().double()
    x = torch.full((n,), 0.5, dtype=F64)
    y = torch.full((n,), 1.0, dtype=F64)
    z_cf = counterfactual(model, {"x": x, "y": y}, {"y": 0.0}, n)["counterfactual"]["z"]
    assert abs(z_cf.mean().item() - 1.5) < 5 * standard_error(z_cf)


@pytest.mark.parametrize("mechanism", ["maf", "nsf", "locscale"])
def test_every_builder_mechanism_abducts_and_predicts(mechanism):
    """Regression: MAF layers carry the context batch dims (abduction once crashed)."""
    from pyro_causalgen import StructuralCausalModel, counterfactual

    kwargs = {} if mechanism == "locscale" else {"hidden_features": (8,)}
    scm = StructuralCausalModel(
        {"x": [], "y": ["x"], "z": ["x", "y"]},
        mechanism=mechanism,
        mechanism_kwargs=kwargs,
    )
    obs = {k: torch.randn(5) for k in "xyz"}
    same = counterfactual(scm, obs, {}, n=5)
    for k in "xyz":
        assert torch.allclose(same["counterfactual"][k], obs[k], atol=1e-5)
    moved = counterfactual(scm, obs, {"x": 1.0}, n=5)
    assert torch.all(moved["counterfactual"]["x"] == 1.0)
    # y' = f_y(f_y^{-1}(y; x); x'): recompute by hand with the mechanism
    d_f = scm.mechanism("y")(x=obs["x"])
    d_cf = scm.mechanism("y")(x=torch.ones(5))
    expected = d_cf.from_noise(d_f.noise(obs["y"]))
    assert torch.allclose(moved["counterfactual"]["y"], expected, atol=1e-5)
