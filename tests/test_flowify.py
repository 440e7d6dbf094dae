"""flowify(): structure from provenance, site rules, shapes, handlers, save / load,
unsupported constructs, and counterfactuals exact on the sites kept parametric.

Statistical checks (fit + do against the original program) are in
``tests/test_flowify_fit.py``.
"""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Predictive
from pyro.nn import PyroModule
from torch import nn

from pyro_causalgen import do, save
from pyro_causalgen.errors import CausalModelError, UnknownSiteError
from pyro_causalgen.flowify import (
    FlowifiedModel,
    FlowifyMessenger,
    FlowifyWarning,
    UnsupportedModelError,
    discover_structure,
    flowify,
)
from pyro_causalgen.infer.fit import negative_log_likelihood
from pyro_causalgen.mechanisms import MechanismDistribution

SMALL = {"hidden_features": (8,), "transforms": 1}


# ------------------------------------------------------------------ models
def linear_gaussian(n: int = 1) -> torch.Tensor:
    """x ~ N(0, 1); y ~ N(1 + 2x, 0.5); z ~ N(y - x, 0.3)."""
    with pyro.plate("units", n):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        y = pyro.sample("y", dist.Normal(1.0 + 2.0 * x, 0.5))
        return pyro.sample("z", dist.Normal(y - x, 0.3))


def supports(n: int = 1) -> None:
    with pyro.plate("units", n):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("g", dist.Gamma(2.0, torch.exp(-x)))
        pyro.sample("ln", dist.LogNormal(x, 0.5))
        pyro.sample("e", dist.Exponential(torch.exp(x)))
        pyro.sample("b", dist.Beta(torch.exp(x), 2.0))
        pyro.sample("v", dist.Normal(x.unsqueeze(-1), torch.ones(3)).to_event(1))


class NetModel(PyroModule):
    """A plated program with a network, a vector site and a deterministic site."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, n: int = 1) -> torch.Tensor:
        with pyro.plate("units", n):
            x = pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            h = pyro.deterministic("h", self.net(x).squeeze(-1))
            y = pyro.sample("y", dist.Normal(h, 0.3))
            return pyro.sample("z", dist.Normal(y + x[..., 0], 0.5))


def sample_sites(tr: poutine.Trace) -> dict:
    return {
        k: s
        for k, s in tr.nodes.items()
        if s["type"] == "sample" and type(s["fn"]).__name__ != "_Subsample"
    }


# --------------------------------------------------------------- structure
def test_parents_are_read_by_provenance():
    fm = flowify(linear_gaussian, model_kwargs={"n": 3}, mechanism_kwargs=SMALL)
    assert fm.parents == {"x": (), "y": ("x",), "z": ("x", "y")}
    assert fm.learned_sites == ["x", "y", "z"] and fm.kept_sites == []
    assert fm.mechanism("z").parents == {"x": (), "y": ()}
    assert isinstance(fm, nn.Module) and len(list(fm.parameters())) > 0


def test_plates_pyromodule_and_deterministic_structure():
    program = NetModel()
    fm = flowify(program, model_kwargs={"n": 4}, flow="maf", mechanism_kwargs=SMALL)
    # the deterministic site is a parent (so do(h) reaches y), never learned
    assert fm.parents == {"x": (), "h": ("x",), "y": ("h",), "z": ("x", "y")}
    assert fm.learned_sites == ["x", "y", "z"]
    assert fm.structure["h"].deterministic and fm.structure["h"].event_shape == ()
    assert fm.mechanism("x").event_shape == (2,)
    assert fm.mechanism("z").parents == {"x": (2,), "y": ()}
    # the program is a submodule: it moves with the model and is in its state
    assert any(k.startswith("program.net") for k in fm.state_dict())
    tr = poutine.trace(fm).get_trace(n=7)
    sites = sample_sites(tr)
    assert tuple(sites["x"]["value"].shape) == (7, 2)
    assert tuple(sites["x"]["fn"].batch_shape) == (7,)
    assert tuple(sites["x"]["fn"].event_shape) == (2,)
    for name in ("y", "z"):
        assert isinstance(sites[name]["fn"], MechanismDistribution)
        assert tuple(sites[name]["fn"].batch_shape) == (7,)
    # deterministic sites get the event dim right of their plates
    assert tuple(sites["h"]["fn"].event_shape) == ()
    assert sites["h"]["cond_indep_stack"][0].name == "units"


def test_nested_plates_and_global_parents_broadcast():
    def model(n=1):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        with pyro.plate("groups", 3, dim=-2), pyro.plate("units", n, dim=-1):
            b = pyro.sample("b", dist.Normal(a, 1.0))
            return pyro.sample("c", dist.LogNormal(b, 1.0))

    fm = flowify(model, model_kwargs={"n": 2}, mechanism_kwargs=SMALL)
    assert fm.parents == {"a": (), "b": ("a",), "c": ("b",)}
    tr = poutine.trace(fm).get_trace(n=5)
    assert tuple(tr.nodes["b"]["fn"].batch_shape) == (3, 5)
    assert tuple(tr.nodes["c"]["value"].shape) == (3, 5)
    assert bool((tr.nodes["c"]["value"] > 0).all())
    assert torch.isfinite(tr.log_prob_sum())


def test_support_rules_and_shapes():
    fm = flowify(supports, model_kwargs={"n": 3}, mechanism_kwargs=SMALL)
    support = {s: fm.mechanism(s).support for s in fm.learned_sites}
    assert support == {
        "x": "real",
        "g": "positive",
        "ln": "positive",
        "e": "positive",
        "b": "unit_interval",
        "v": "real",
    }
    with torch.no_grad():
        tr = poutine.trace(fm).get_trace(n=200)
    for s in ("g", "ln", "e"):
        assert bool((tr.nodes[s]["value"] > 0).all())
    b = tr.nodes["b"]["value"]
    assert bool(((b > 0) & (b < 1)).all())
    assert tuple(tr.nodes["v"]["value"].shape) == (200, 3)
    assert torch.isfinite(tr.log_prob_sum())


def test_kept_sites_use_the_programs_distribution_at_current_parents():
    fm = flowify(
        linear_gaussian, keep=["y"], model_kwargs={"n": 3}, mechanism_kwargs=SMALL
    )
    assert fm.learned_sites == ["x", "z"] and fm.kept_sites == ["y"]
    tr = poutine.trace(do(fm, {"x": 2.0})).get_trace(n=4)
    fn = tr.nodes["y"]["fn"]
    assert type(fn).__name__ == "Normal"
    assert torch.equal(fn.loc, torch.full((4,), 5.0))
    assert bool((fn.scale == 0.5).all())
    assert isinstance(tr.nodes["z"]["fn"], MechanismDistribution)
    # the learned child sees the intervened parent
    ctx = tr.nodes["z"]["fn"].context
    assert torch.equal(ctx[:, 0], torch.full((4,), 2.0))
    assert torch.equal(ctx[:, 1], tr.nodes["y"]["value"])


def test_do_on_a_deterministic_site_reaches_its_learned_children():
    fm = flowify(NetModel(), model_kwargs={"n": 2}, flow="maf", mechanism_kwargs=SMALL)
    tr = poutine.trace(do(fm, {"h": 3.0})).get_trace(n=6)
    assert torch.equal(tr.nodes["y"]["fn"].context[:, 0], torch.full((6,), 3.0))


def test_observed_sites_become_mechanism_sites_scored_at_their_observation():
    def model(y_obs=None):
        with pyro.plate("units", 4):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            return pyro.sample("y", dist.Normal(x, 1.0), obs=y_obs)

    y_obs = torch.arange(4.0)
    fm = flowify(model, model_kwargs={"y_obs": y_obs}, mechanism_kwargs=SMALL)
    assert fm.learned_sites == ["x", "y"] and fm.structure["y"].observed
    tr = poutine.trace(fm).get_trace(y_obs)
    site = tr.nodes["y"]
    assert site["is_observed"] and torch.equal(site["value"], y_obs)
    assert isinstance(site["fn"], MechanismDistribution)
    expected = fm.mechanism("y")(x=tr.nodes["x"]["value"]).log_prob(y_obs)
    assert torch.allclose(site["fn"].log_prob(y_obs), expected)
    # without the observation the site is simulated by its mechanism
    assert not torch.equal(fm(None), y_obs)


def test_every_mechanism_parameter_gets_a_gradient():
    fm = flowify(linear_gaussian, model_kwargs={"n": 3}, mechanism_kwargs=SMALL)
    batch = {k: torch.randn(16) for k in "xyz"}
    negative_log_likelihood(fm, batch, n=16).backward()
    for name, p in fm.mechanisms.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_messenger_alone_and_device_dtype(device, dtype):
    fm = flowify(linear_gaussian, model_kwargs={"n": 2}, mechanism_kwargs=SMALL)
    fm = fm.to(device=device, dtype=dtype)
    data = {k: torch.randn(5, device=device, dtype=dtype) for k in "xyz"}
    with fm.messenger():
        tr = poutine.trace(poutine.condition(linear_gaussian, data)).get_trace(n=5)
    lp = tr.log_prob_sum()
    assert lp.device.type == device.type and lp.dtype == dtype
    assert torch.allclose(lp, -negative_log_likelihood(fm, data, n=5))
    assert isinstance(fm.messenger(), FlowifyMessenger)


def test_composes_with_predictive_and_replay():
    fm = flowify(linear_gaussian, model_kwargs={"n": 2}, mechanism_kwargs=SMALL)
    samples = Predictive(fm, num_samples=3)(n=5)
    assert {k: tuple(v.shape) for k, v in samples.items()} == {
        "x": (3, 5),
        "y": (3, 5),
        "z": (3, 5),
    }
    tr = poutine.trace(fm).get_trace(n=4)
    replayed = poutine.trace(poutine.replay(fm, trace=tr)).get_trace(n=4)
    for k in "xyz":
        assert torch.equal(replayed.nodes[k]["value"], tr.nodes[k]["value"])
    assert torch.allclose(replayed.log_prob_sum(), tr.log_prob_sum())


# -------------------------------------------------------- rules and errors
def test_gumbel_max_discrete_sites_are_kept_with_a_warning():
    def model(n=1):
        with pyro.plate("units", n):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            t = pyro.sample("t", dist.Bernoulli(logits=x))
            c = pyro.sample("c", dist.Categorical(logits=torch.zeros(3)))
            return pyro.sample("y", dist.Normal(x + t + c, 1.0))

    with pytest.warns(FlowifyWarning, match=r"\['t', 'c'\]"):
        fm = flowify(model, model_kwargs={"n": 3}, mechanism_kwargs=SMALL)
    assert fm.learned_sites == ["x", "y"] and fm.kept_sites == ["t", "c"]
    assert fm.parents["y"] == ("x", "t", "c")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flowify(model, keep=["t", "c"], model_kwargs={"n": 3}, mechanism_kwargs=SMALL)
    with pytest.raises(UnsupportedModelError, match="site 't'"):
        flowify(model, sites=["t", "y"], model_kwargs={"n": 3})


def test_discrete_sites_without_gumbel_max_raise_naming_the_site():
    def model(n=1):
        with pyro.plate("units", n):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            k = pyro.sample("k", dist.Poisson(torch.exp(x)))
            return pyro.sample("y", dist.Normal(k, 1.0))

    with pytest.raises(UnsupportedModelError, match=r"site 'k'.*Poisson.*Gumbel-max"):
        flowify(model, model_kwargs={"n": 3})
    fm = flowify(model, keep=["k"], model_kwargs={"n": 3}, mechanism_kwargs=SMALL)
    assert fm.kept_sites == ["k"]


@pytest.mark.parametrize(
    "fn, pattern",
    [
        (dist.Dirichlet(torch.ones(3)), "support"),
        (dist.Uniform(-1.0, 2.0), "support"),
        (dist.Normal(torch.zeros(2, 2), 1.0).to_event(2), "event shape"),
    ],
    ids=["simplex", "interval", "matrix"],
)
def test_unsupported_sites_raise_unless_kept(fn, pattern):
    def model():
        return pyro.sample("w", fn)

    with pytest.raises(UnsupportedModelError, match=f"site 'w'.*{pattern}"):
        flowify(model)
    assert flowify(model, keep="w").kept_sites == ["w"]


def test_unknown_and_conflicting_site_names_raise():
    with pytest.raises(UnknownSiteError, match="'q'"):
        flowify(linear_gaussian, sites=["q"])
    with pytest.raises(UnknownSiteError, match="deterministic"):
        flowify(NetModel(), keep=["h"])
    with pytest.raises(CausalModelError, match=r"\['y'\]"):
        flowify(linear_gaussian, sites=["y"], keep=["y"])
    with pytest.raises(UnknownSiteError, match="'x'"):
        flowify(linear_gaussian, sites=["y"], flow={"x": "maf"})


def test_branching_on_a_sampled_value_raises_naming_the_site():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        if x > 0:  # control flow on a sampled value
            return pyro.sample("y", dist.Normal(x, 1.0))
        return pyro.sample("y", dist.Normal(-x, 2.0))

    with pytest.raises(UnsupportedModelError, match=r"\['x'\].*__bool__.*test_flowify"):
        flowify(model)

    def uses_item():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        return pyro.sample("y", dist.Normal(0.0, 1.0 + abs(x.item())))

    with pytest.raises(UnsupportedModelError, match=r"\['x'\].*item"):
        flowify(uses_item)


def test_vectorised_branching_is_fine():
    def model(n=1):
        with pyro.plate("units", n):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            return pyro.sample("y", dist.Normal(torch.where(x > 0, x, -x), 1.0))

    assert flowify(model, model_kwargs={"n": 5}, mechanism_kwargs=SMALL).parents[
        "y"
    ] == ("x",)


def test_parent_sets_or_sites_changing_between_runs_raise():
    def switching(n=1):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        parent = a if torch.rand(()) < 0.5 else b  # randomness outside pyro.sample
        return pyro.sample("c", dist.Normal(parent, 1.0))

    with pytest.raises(UnsupportedModelError, match="site 'c'.*parents change"):
        flowify(switching, trials=8, seed=0)

    def optional(n=1):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        if torch.rand(()) < 0.5:
            pyro.sample("extra", dist.Normal(a, 1.0))

    with pytest.raises(UnsupportedModelError, match=r"\['extra'\]"):
        flowify(optional, trials=8, seed=0)


def test_dependence_across_a_plate_raises_naming_both_sites():
    def model(n=3):
        with pyro.plate("units", n):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
        return pyro.sample("total", dist.Normal(x.sum(), 1.0))

    with pytest.raises(UnsupportedModelError, match=r"'total'.*'x'.*\['units'\]"):
        flowify(model)


def test_trial_runs_leave_the_global_rng_alone():
    torch.manual_seed(3)
    expected = torch.randn(3)
    torch.manual_seed(3)
    discover_structure(linear_gaussian, model_kwargs={"n": 5}, trials=3)
    assert torch.equal(torch.randn(3), expected)


# ------------------------------------------------------------- save / load
def _perturbed(fm: FlowifiedModel) -> FlowifiedModel:
    with torch.no_grad():
        for p in fm.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for name, b in fm.named_buffers():
            if name.endswith("_loc"):
                b.add_(torch.randn_like(b))
    return fm


def test_save_state_load_state_round_trip_is_exact(tmp_path):
    program = NetModel()
    fm = _perturbed(flowify(program, model_kwargs={"n": 2}, mechanism_kwargs=SMALL))
    path = tmp_path / "flowified.pt"
    fm.save_state(path)
    with torch.no_grad():
        for p in program.parameters():  # the program's own weights are restored too
            p.zero_()
    fresh = flowify(NetModel(), model_kwargs={"n": 2}, mechanism_kwargs=SMALL)
    assert fresh.load_state(path) is fresh
    fm = _perturbed(flowify(program, model_kwargs={"n": 2}, mechanism_kwargs=SMALL))
    fm.load_state(path)
    pyro.set_rng_seed(1)
    tr_a = poutine.trace(fresh).get_trace(n=9)
    pyro.set_rng_seed(1)
    tr_b = poutine.trace(fm).get_trace(n=9)
    for name in ("x", "h", "y", "z"):
        assert torch.equal(tr_a.nodes[name]["value"], tr_b.nodes[name]["value"]), name
    assert torch.equal(tr_a.log_prob_sum(), tr_b.log_prob_sum())


def test_load_state_into_a_different_model_names_the_site(tmp_path):
    path = tmp_path / "flowified.pt"
    flowify(linear_gaussian, mechanism_kwargs=SMALL).save_state(path)
    with pytest.raises(CausalModelError, match="site 'y'"):
        flowify(linear_gaussian, keep=["y"], mechanism_kwargs=SMALL).load_state(path)
    with pytest.raises(CausalModelError, match="site 'x'"):
        flowify(linear_gaussian, flow={"x": "maf"}, mechanism_kwargs=SMALL).load_state(
            path
        )


def test_pyro_causalgen_save_points_to_save_state(tmp_path):
    fm = flowify(linear_gaussian, mechanism_kwargs=SMALL)
    with pytest.raises(CausalModelError, match="config"):
        save(fm, tmp_path / "m.pt")


# ---------------------------------------------------------- counterfactuals
def _abduct_and_predict(fm, observed, action):
    """Twin world by hand: noise from the factual trace, replayed under do()."""
    with torch.no_grad():
        fact = poutine.trace(poutine.condition(fm, observed)).get_trace(
            n=len(observed["x"])
        )
    noise = {}
    for name in ("x", "y", "z"):
        fn = fact.nodes[name]["fn"]
        x = fact.nodes[name]["value"]
        noise[name] = (
            fn.noise(x)
            if isinstance(fn, MechanismDistribution)
            else ((x - fn.loc) / fn.scale)
        )

    class Predict(pyro.poutine.messenger.Messenger):
        def _pyro_sample(self, msg):
            if msg["name"] in noise:
                fn, u = msg["fn"], noise[msg["name"]]
                msg["value"] = (
                    fn.from_noise(u)
                    if isinstance(fn, MechanismDistribution)
                    else fn.loc + fn.scale * u
                )

    with torch.no_grad(), Predict():
        cf = poutine.trace(do(fm, action)).get_trace(n=len(observed["x"]))
    return fact, noise, cf


def test_counterfactuals_are_exact_on_kept_sites_by_hand():
    fm = _perturbed(
        flowify(
            linear_gaussian, keep=["y"], model_kwargs={"n": 2}, mechanism_kwargs=SMALL
        )
    )
    observed = {k: torch.randn(6) for k in "xyz"}
    fact, noise, cf = _abduct_and_predict(fm, observed, {"x": 1.5})
    # the kept site: y_cf = 1 + 2 * 1.5 + 0.5 * u_y with u_y = (y - 1 - 2x) / 0.5
    u_y = (observed["y"] - 1.0 - 2.0 * observed["x"]) / 0.5
    assert torch.allclose(noise["y"], u_y)
    assert torch.allclose(cf.nodes["y"]["value"], 4.0 + 0.5 * u_y)
    # learned sites: abduction is exact (prediction from the abducted noise
    # reproduces the observation), and the counterfactual uses the same noise
    fn_z = fact.nodes["z"]["fn"]
    assert torch.allclose(fn_z.from_noise(noise["z"]), observed["z"], atol=1e-5)
    y_cf = cf.nodes["y"]["value"]
    z_cf = fm.mechanism("z")(x=torch.full((6,), 1.5), y=y_cf).from_noise(noise["z"])
    assert torch.allclose(cf.nodes["z"]["value"], z_cf)


def test_counterfactuals_with_the_twin_world_handler():
    counterfactual = pytest.importorskip(
        "pyro_causalgen.infer.counterfactual", reason="counterfactual handler pending"
    ).counterfactual
    fm = _perturbed(
        flowify(
            linear_gaussian,
            keep=["y"],
            flow="nsf",
            model_kwargs={"n": 2},
            mechanism_kwargs=SMALL,
        )
    )
    observed = {k: torch.randn(6) for k in "xyz"}
    out = counterfactual(fm, observed, {"x": 1.5}, n=6)
    for k in "xyz":
        assert torch.allclose(out["factual"][k], observed[k], atol=1e-5), k
    u_y = (observed["y"] - 1.0 - 2.0 * observed["x"]) / 0.5
    assert torch.allclose(out["counterfactual"]["y"], 4.0 + 0.5 * u_y, atol=1e-5)
    # the learned site shares its noise across worlds: same answer as by hand
    _, _, cf = _abduct_and_predict(fm, observed, {"x": 1.5})
    assert torch.allclose(out["counterfactual"]["z"], cf.nodes["z"]["value"], atol=1e-4)
