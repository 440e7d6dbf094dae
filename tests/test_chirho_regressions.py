"""Regressions for the cases where ChiRho 0.3 counterfactuals are wrong or crash.

(a) a plain ``Normal(loc(pa), scale(pa))`` site gets fresh noise in the counterfactual
world; (b) an unobserved site downstream of the intervention draws noise per world, even
under ``TransformReparam``; (c) a transform whose parameters carry world dims that the
distribution's batch shape does not; (d) ``pyro.condition`` / ``obs=`` under a
counterfactual handler; crashes of Pyro's conditional transforms under world dims; and
the exponential growth of ChiRho's ``MultiWorldCounterfactual``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pyro.poutine as poutine
import pytest
import torch
from chirho.counterfactual.handlers import MultiWorldCounterfactual as ChirhoMulti
from chirho.counterfactual.handlers import TwinWorldCounterfactual as ChirhoTwin
from chirho.interventional.handlers import do as chirho_do
from pyro.infer.reparam import TransformReparam

from pyro_causalgen import do
from pyro_causalgen.handlers import (
    CounterfactualError,
    MultiWorldCounterfactual,
    TwinWorldCounterfactual,
)
from pyro_causalgen.infer.counterfactual import counterfactual
from pyro_causalgen.testing import assert_close

N = 6


def hetero(n: int = N):
    """x ~ N(0,1); y ~ N(2x, 1 + |x|) (plain Normal, parent-dependent scale)."""
    with pyro.plate("units", n):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        return pyro.sample("y", dist.Normal(2 * x, 1 + x.abs()))


def test_a_plain_normal_site_shares_noise_unobserved_and_observed(device):
    x = torch.randn(N, device=device)
    y = torch.randn(N, device=device)
    # unobserved y downstream: noise (y - 2x) / (1 + |x|) equal in both worlds
    out = counterfactual(hetero, {"x": x}, {"x": 1.0}, N)
    u_f = (out["factual"]["y"] - 2 * x) / (1 + x.abs())
    u_cf = (out["counterfactual"]["y"] - 2.0) / 2.0
    assert_close(u_cf, u_f, 1e-5, "shared noise of unobserved y")
    # observed y: exact abduction
    out = counterfactual(hetero, {"x": x, "y": y}, {"x": 1.0}, N)
    assert_close(
        out["counterfactual"]["y"], 2.0 + 2.0 * (y - 2 * x) / (1 + x.abs()), 1e-5
    )
    # the scenario is the one ChiRho gets wrong: its worlds draw different noise
    with ChirhoTwin():
        tr = poutine.trace(chirho_do(hetero, {"x": torch.tensor(1.0)})).get_trace()
    yc = tr.nodes["y"]["value"].reshape(2, N)
    xc = tr.nodes["x"]["value"].reshape(N)
    assert not torch.allclose((yc[1] - 2.0) / 2.0, (yc[0] - 2 * xc) / (1 + xc.abs()))


def affine_model(n: int = N):
    with pyro.plate("units", n):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        base = dist.Normal(torch.zeros(n, device=x.device), 1.0)
        y = pyro.sample(
            "y", dist.TransformedDistribution(base, [T.AffineTransform(2 * x, 1.0)])
        )
        return pyro.sample("z", dist.Normal(y, 1.0))


def test_b_unobserved_downstream_site_under_transform_reparam():
    reparam = poutine.reparam(affine_model, config={"y": TransformReparam()})
    x = torch.randn(N)
    with TwinWorldCounterfactual({"x": x}, {"x": 1.0}) as cf:
        tr = poutine.trace(reparam).get_trace()
    assert tr.nodes["u(y_base)"]["value"].shape == (N,)  # one noise for both worlds
    y_f, y_cf = (
        cf.gather(cf.values["y"], "factual"),
        cf.gather(cf.values["y"], "counterfactual"),
    )
    assert_close(y_cf - y_f, 2.0 - 2 * x, 1e-5, "y' - y")
    z_f, z_cf = (
        cf.gather(cf.values["z"], "factual"),
        cf.gather(cf.values["z"], "counterfactual"),
    )
    assert_close(z_cf - z_f, 2.0 - 2 * x, 1e-5, "z' - z")
    with ChirhoTwin():  # ChiRho: y_base is drawn per world
        tr = poutine.trace(chirho_do(reparam, {"x": torch.tensor(1.0)})).get_trace()
    base = tr.nodes["y_base"]["value"].reshape(2, N)
    assert not torch.allclose(base[0], base[1])


def test_c_transform_params_with_world_dims_the_batch_shape_lacks():
    """The base carries only the plate; the affine map carries the worlds."""
    x, y, z = torch.randn(N), torch.randn(N), torch.randn(N)
    out = counterfactual(affine_model, {"x": x, "y": y, "z": z}, {"x": 1.0}, N)
    y_cf = y + 2.0 - 2 * x
    assert_close(out["counterfactual"]["y"], y_cf, 1e-5)
    assert_close(out["counterfactual"]["z"], z + y_cf - y, 1e-5)
    out = counterfactual(affine_model, {"x": x}, {"x": 1.0}, N)
    assert_close(out["counterfactual"]["y"] - out["factual"]["y"], 2.0 - 2 * x, 1e-5)


def test_d_condition_and_obs_raise_and_observations_are_supported():
    obs = {"x": torch.zeros(N), "y": torch.ones(N)}
    with pytest.raises(CounterfactualError, match="site 'x'"):
        with TwinWorldCounterfactual():
            do(poutine.condition(hetero, obs), {"x": 1.0})()
    with pytest.raises(CounterfactualError, match="outside"):
        poutine.condition(TwinWorldCounterfactual()(do(hetero, {"x": 1.0})), obs)()
    out = counterfactual(hetero, obs, {"x": 1.0}, N)
    assert_close(out["counterfactual"]["y"], torch.full((N,), 4.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda: T.conditional_spline(1, context_dim=1),
        lambda: T.conditional_affine_autoregressive(1, context_dim=1),
        lambda: T.conditional_affine_coupling(2, context_dim=1),
    ],
    ids=["spline", "affine_autoregressive", "affine_coupling"],
)
def test_pyro_conditional_transforms_under_world_dims(make):
    transform = make()
    dim = 2 if isinstance(transform, T.ConditionalAffineCoupling) else 1
    base = dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)
    cond = dist.ConditionalTransformedDistribution(base, [transform])

    def model(n: int = N):
        with pyro.plate("units", n):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            return pyro.sample("y", cond.condition(x.unsqueeze(-1)))

    with ChirhoTwin(), pytest.raises((RuntimeError, IndexError)):  # ChiRho crashes
        chirho_do(model, {"x": torch.tensor(1.0)})()
    x, y = torch.randn(N), torch.randn(N, dim)
    with torch.no_grad():
        out = counterfactual(model, {"x": x, "y": y}, {"x": 1.0}, N)
        u = cond.condition(x.unsqueeze(-1)).transforms[0].inv(y)
        expected = cond.condition(torch.ones(N, 1)).transforms[0](u)
    assert out["counterfactual"]["y"].shape == (N, dim)
    assert_close(out["counterfactual"]["y"], expected, 1e-4)
    assert_close(out["factual"]["y"], y, 0.0)


def three_treatments(n: int = N):
    with pyro.plate("units", n):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(a, 1.0))
        c = pyro.sample("c", dist.Normal(b, 1.0))
        return pyro.sample("y", dist.Normal(a + b + c, 1.0))


def test_multi_world_grows_with_worlds_used_not_exponentially():
    acts = {"a": torch.tensor(1.0), "b": torch.tensor(2.0), "c": torch.tensor(3.0)}
    with ChirhoMulti():
        y = chirho_do(three_treatments, acts)()
    assert y.numel() == 2**3 * N  # ChiRho: one world dim per intervention
    worlds = {f"do({k})": {k: v} for k, v in acts.items()}
    with MultiWorldCounterfactual(worlds) as mw:
        y = three_treatments()
    assert y.shape == (4, N)  # ours: 1 + 3 worlds
    y_f = mw.gather(y, "factual")
    b_f = mw.gather(mw.values["b"], "factual")
    c_f = mw.gather(mw.values["c"], "factual")
    a_f = mw.gather(mw.values["a"], "factual")
    # do(c = 3) changes y by exactly 3 - c
    assert_close(mw.gather(y, "do(c)") - y_f, 3.0 - c_f, 1e-5)
    # do(a = 1) propagates through b and c with shared noise: each shifts by 1 - a
    assert_close(mw.gather(y, "do(a)") - y_f, 3 * (1.0 - a_f), 1e-5)
    assert_close(mw.gather(mw.values["c"], "do(b)") - c_f, 2.0 - b_f, 1e-5)
