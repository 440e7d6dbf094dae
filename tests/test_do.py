"""do(): hard, per-row, stochastic and shift interventions; composition; errors."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from chirho.counterfactual.handlers import TwinWorldCounterfactual
from chirho.interventional.handlers import do as chirho_do
from pyro.infer import Predictive

from pyro_causalgen import StructuralCausalModel, do
from pyro_causalgen.errors import CausalModelError, ShapeError, UnknownSiteError


def linear_gaussian_scm() -> StructuralCausalModel:
    """x ~ N(0,1); y = 2x + N(0, .5^2); z = 3x - y + N(0, 1), all in float64."""
    scm = StructuralCausalModel(
        {"x": [], "y": ["x"], "z": ["x", "y"]}, mechanism="locscale"
    ).double()
    with torch.no_grad():
        scm.mechanism("y").net[0].weight.copy_(torch.tensor([[2.0]]))
        scm.mechanism("y").net[0].bias.zero_()
        scm.mechanism("y").log_scale.fill_(math.log(0.5))
        scm.mechanism("z").net[0].weight.copy_(torch.tensor([[3.0, -1.0]]))
        scm.mechanism("z").net[0].bias.zero_()
    return scm


def test_hard_intervention_gives_the_exact_interventional_distribution():
    scm = linear_gaussian_scm()
    trace = poutine.trace(do(scm, {"y": 1.0})).get_trace(n=100_000)
    # as in ChiRho, the site records its mechanism's draw; downstream sees do(y=1)
    x, y, z = (trace.nodes["_RETURN"]["value"][k] for k in "xyz")
    assert torch.all(y == 1.0) and y.shape == (100_000,)
    assert not torch.all(trace.nodes["y"]["value"] == 1.0)
    # the mechanism of z is evaluated at the intervened y: exactly N(3x - 1, 1)
    expected = dist.Normal(3 * x - 1.0, 1.0).log_prob(z)
    assert torch.allclose(trace.nodes["z"]["fn"].log_prob(z), expected, atol=1e-12)
    # marginally z ~ N(-1, 10): moments within 5 standard errors
    n = z.numel()
    assert abs(z.mean().item() + 1.0) < 5 * math.sqrt(10 / n)
    assert abs(z.var().item() - 10.0) < 5 * 10 * math.sqrt(2 / n)
    # the non-descendant x keeps its observational law N(0, 1)
    assert abs(x.mean().item()) < 5 / math.sqrt(n)


def test_per_row_tensor_intervention_and_shift():
    scm = linear_gaussian_scm()
    values = torch.arange(5, dtype=torch.float64)
    out = do(scm, {"x": values})(n=5)
    assert torch.equal(out["x"], values)
    base = poutine.trace(scm).get_trace(n=5)
    shifted = poutine.replay(do(scm, {"x": lambda v: v + 10.0}), trace=base)(n=5)
    assert torch.allclose(shifted["x"], base.nodes["x"]["value"] + 10)


def test_stochastic_intervention_draws_a_named_site():
    scm = linear_gaussian_scm()
    trace = poutine.trace(do(scm, {"x": dist.Normal(100.0, 1e-3)})).get_trace(n=7)
    assert "do(x)" in trace.nodes
    assert trace.nodes["do(x)"]["value"].shape == (7,)
    x = trace.nodes["_RETURN"]["value"]["x"]
    assert torch.allclose(x, torch.full((7,), 100.0, dtype=x.dtype), atol=0.1)


def test_intervention_is_moved_to_the_site_dtype_and_device(device):
    scm = linear_gaussian_scm().to(device)
    out = do(scm, {"x": torch.ones(3, dtype=torch.float32)})(n=3)
    assert out["x"].dtype == torch.float64 and out["x"].device.type == device.type


def test_unknown_site_names_itself_and_lists_sites():
    scm = linear_gaussian_scm()
    with pytest.raises(UnknownSiteError, match=r"\['w'\].*\['x', 'y', 'z'\]"):
        do(scm, {"w": 1.0})(n=2)


def test_bad_interventions_raise():
    scm = linear_gaussian_scm()
    with pytest.raises(ShapeError, match="'x' has shape \\(3,\\)"):
        do(scm, {"x": torch.zeros(3)})(n=5)
    with pytest.raises(CausalModelError, match="NaN"):
        do(scm, {"x": torch.tensor(float("nan"))})
    with pytest.raises(ShapeError, match="event shape"):
        do(scm, {"x": dist.Normal(torch.zeros(2), 1.0).to_event(1)})(n=5)


def test_same_as_chirho_do_and_composes_with_poutine():
    scm = linear_gaussian_scm()
    pyro.set_rng_seed(1)
    ours = do(scm, {"x": 2.0})(n=50)
    pyro.set_rng_seed(1)
    theirs = chirho_do(scm, {"x": torch.tensor(2.0, dtype=torch.float64)})(n=50)
    for k in "xyz":
        assert torch.allclose(ours[k], theirs[k].expand_as(ours[k]))
    # Predictive over the intervened model
    samples = Predictive(do(scm, {"x": 2.0}), num_samples=3, return_sites=["z"])(n=4)
    assert samples["z"].shape == (3, 4)
    # z's mechanism sees x = 2: with the same draws, z differs from the unintervened
    pyro.set_rng_seed(2)
    a = Predictive(do(scm, {"x": 2.0}), num_samples=1, return_sites=["z"])(n=4)["z"]
    pyro.set_rng_seed(2)
    b = Predictive(scm, num_samples=1, return_sites=["z"])(n=4)["z"]
    assert not torch.allclose(a, b)
    # condition on a non-descendant, block hides sites
    cond = pyro.condition(do(scm, {"y": 0.0}), data={"x": torch.ones(4).double()})
    assert torch.all(cond(n=4)["x"] == 1.0)
    blocked = poutine.trace(poutine.block(do(scm, {"y": 0.0}), hide=["z"])).get_trace(
        n=2
    )
    assert "z" not in blocked.nodes and "y" in blocked.nodes


def test_our_do_splits_worlds_under_chirho_twin_world():
    scm = linear_gaussian_scm()
    with TwinWorldCounterfactual():
        trace = poutine.trace(do(scm, {"x": 5.0})).get_trace(n=3)
    y = trace.nodes["y"]["value"].squeeze()
    assert y.shape == (2, 3)  # y is split into the factual and counterfactual worlds
    fn = trace.nodes["y"]["fn"]  # location of y's mechanism: 2x in each world
    loc = fn.from_noise(torch.zeros(fn.batch_shape, dtype=y.dtype)).squeeze()
    assert torch.allclose(loc[1], torch.full((3,), 10.0, dtype=y.dtype))
    assert not torch.allclose(loc[0], loc[1])


def test_context_manager_and_keyword_forms():
    scm = linear_gaussian_scm()
    with do(x=3.0):
        assert torch.all(scm(n=2)["x"] == 3.0)
    with do({"x": 4.0}):
        assert torch.all(scm(n=2)["x"] == 4.0)
