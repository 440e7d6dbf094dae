"""Mechanisms: exact inverse, log-det, normalisation, shapes, devices, errors."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_causalgen.errors import ShapeError
from pyro_causalgen.mechanisms import (
    FlowMechanism,
    LocScaleMechanism,
    MechanismDistribution,
    make_mechanism,
)

KINDS = [
    ("nsf", {"hidden_features": (16,)}),
    ("maf", {"hidden_features": (16,)}),
    ("locscale", {"hidden_features": (16,), "heteroscedastic": True}),
]


def _mech(kind, kw, event_shape, parents, device, dtype):
    return make_mechanism(kind, event_shape=event_shape, parents=parents, **kw).to(
        device=device, dtype=dtype
    )


def _perturb(mech: torch.nn.Module) -> None:
    """Move parameters away from their initialisation (and standardisation from 0/1)."""
    with torch.no_grad():
        for p in mech.parameters():
            p.add_(0.3 * torch.randn_like(p))
        mech.value_loc.add_(0.5)
        mech.value_scale.mul_(2.0)


@pytest.mark.parametrize("kind,kw", KINDS)
@pytest.mark.parametrize("event_shape", [(), (3,)])
def test_inverse_is_exact(kind, kw, event_shape, device, dtype):
    parents = {"a": (), "b": (2,)}
    mech = _mech(kind, kw, event_shape, parents, device, dtype)
    _perturb(mech)
    a = torch.randn(4, 1, 5, device=device, dtype=dtype)  # extra leading batch dims
    b = torch.randn(5, 2, device=device, dtype=dtype)
    d = mech(a=a, b=b)
    assert d.batch_shape == (4, 1, 5)
    u = torch.randn(4, 1, 5, *event_shape, device=device, dtype=dtype)
    x = d.from_noise(u)
    assert x.shape == u.shape and x.device == device and x.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert torch.allclose(d.noise(x), u, atol=tol, rtol=tol)


@pytest.mark.parametrize("kind,kw", KINDS)
@pytest.mark.parametrize("event_shape", [(), (3,)])
def test_log_det_matches_autograd(kind, kw, event_shape):
    mech = _mech(kind, kw, event_shape, {"a": ()}, "cpu", torch.float64)
    _perturb(mech)
    a = torch.tensor(0.7, dtype=torch.float64)
    d = mech(a=a)
    x = torch.randn(event_shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(d.noise, x).reshape(x.numel(), x.numel())
    expected = d.base_dist.log_prob(d.noise(x)) + torch.linalg.slogdet(jac)[1]
    assert torch.allclose(d.log_prob(x), expected, atol=1e-8)
    # the one-pass log_prob equals Pyro's generic TransformedDistribution formula
    generic = dist.TransformedDistribution.log_prob(d, x)
    assert torch.allclose(d.log_prob(x), generic, atol=1e-8)


@pytest.mark.parametrize("kind,kw", KINDS)
def test_density_integrates_to_one(kind, kw):
    """Importance sampling: E_q[p(x)/q(x)] = 1, tolerance 5 Monte-Carlo s.e."""
    mech = _mech(kind, kw, (2,), {"a": ()}, "cpu", torch.float64)
    _perturb(mech)
    d = mech(a=torch.tensor(0.3, dtype=torch.float64))
    samples = d.sample((4000,))
    loc, scale = samples.mean(0), 2.0 * samples.std(0)
    q = dist.Normal(loc, scale).to_event(1)
    x = q.sample((200_000,))
    w = (d.log_prob(x) - q.log_prob(x)).exp()
    se = w.std() / math.sqrt(len(w))
    assert abs(w.mean().item() - 1.0) < 5 * se.item() + 1e-3


def test_locscale_root_is_normal_in_data_space():
    mech = LocScaleMechanism().double()
    with torch.no_grad():
        mech.loc.fill_(0.5)
        mech.log_scale.fill_(math.log(3.0))
        mech.value_loc.fill_(-1.0)
        mech.value_scale.fill_(2.0)
    x = torch.linspace(-5, 5, 11, dtype=torch.float64)
    # x = -1 + 2 * (0.5 + 3 u)  =>  N(0, 6)
    expected = dist.Normal(0.0, 6.0).log_prob(x)
    assert torch.allclose(mech().log_prob(x), expected, atol=1e-12)


def test_standardize_from_sets_data_statistics():
    mech = FlowMechanism(parents={"a": ()}, hidden_features=(8,))
    a = 3 + 2 * torch.randn(1000)
    x = -5 + 0.1 * torch.randn(1000)
    mech.standardize_from(x, mech.context(a=a))
    assert torch.allclose(mech.value_loc, x.mean())
    assert torch.allclose(mech.value_scale, x.std())
    assert torch.allclose(mech.context_loc, a.mean().reshape(1))
    assert torch.allclose(mech.context_scale, a.std().reshape(1))


def test_context_flattens_mixed_parent_shapes_and_broadcasts():
    mech = FlowMechanism(parents={"a": (), "b": (2,), "c": (3,)}, hidden_features=(4,))
    ctx = mech.context(torch.ones(2, 1), torch.zeros(7, 2), c=torch.full((3,), 5.0))
    assert ctx.shape == (2, 7, 6)
    assert torch.equal(ctx[1, 3], torch.tensor([1.0, 0, 0, 5, 5, 5]))


@pytest.mark.parametrize("kind,kw", KINDS)
def test_gradients_reach_every_parameter(kind, kw):
    mech = make_mechanism(kind, event_shape=(2,), parents={"a": ()}, **kw)
    d = mech(a=torch.randn(64))
    (-d.log_prob(torch.randn(64, 2)).sum()).backward()
    for name, p in mech.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mechanism_at_a_pyro_site_in_a_plate():
    root = FlowMechanism(hidden_features=(8,), name="a")
    child = FlowMechanism(parents=["a"], event_shape=(2,), hidden_features=(8,))

    def model():
        with pyro.plate("units", 6):
            a = pyro.sample("a", root())
            return pyro.sample("b", child(a))

    trace = pyro.poutine.trace(model).get_trace()
    a, b = trace.nodes["a"]["value"], trace.nodes["b"]["value"]
    assert a.shape == (6,) and b.shape == (6, 2)
    assert isinstance(trace.nodes["a"]["fn"], MechanismDistribution)
    expected = root().log_prob(a).sum() + child(a).log_prob(b).sum()
    assert torch.allclose(trace.log_prob_sum(), expected)


def test_device_and_dtype_follow_the_module(device):
    mech = FlowMechanism(parents=["a"], hidden_features=(8,)).to(device, torch.float64)
    x = mech(a=torch.zeros(3, device=device, dtype=torch.float64)).sample()
    assert x.device.type == device.type and x.dtype == torch.float64
    # integer-valued parents are cast to the module's dtype
    assert mech(a=torch.arange(3, device=device)).sample().dtype == torch.float64


def test_bad_inputs_name_the_parent():
    mech = FlowMechanism(parents={"a": (), "b": (2,)}, name="y", hidden_features=(4,))
    with pytest.raises(ShapeError, match="parent 'b' has shape \\(5, 3\\)"):
        mech(a=torch.zeros(5), b=torch.zeros(5, 3))
    with pytest.raises(ShapeError, match="missing parent value\\(s\\) \\['b'\\]"):
        mech(a=torch.zeros(5))
    with pytest.raises(ShapeError, match="'q' is not a parent"):
        mech(a=torch.zeros(5), b=torch.zeros(5, 2), q=1)
    with pytest.raises(ShapeError, match="do not broadcast"):
        mech(a=torch.zeros(4), b=torch.zeros(5, 2))
    with pytest.raises(ShapeError, match="more than one dim"):
        FlowMechanism(event_shape=(2, 2))
    with pytest.raises(ValueError, match="unknown flow"):
        FlowMechanism(flow="glow")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_device_mismatch_is_reported():
    mech = FlowMechanism(parents=["a"], name="y").cuda()
    with pytest.raises(ShapeError, match="parent 'a' is on cpu"):
        mech(a=torch.zeros(3))


@pytest.mark.parametrize("support", ["positive", "unit_interval"])
@pytest.mark.parametrize("event_shape", [(), (2,)])
def test_constrained_supports_are_exact(support, event_shape):
    mech = FlowMechanism(
        event_shape, parents=["a"], support=support, hidden_features=(8,)
    ).double()
    _perturb(mech)
    d = mech(a=torch.randn(5, dtype=torch.float64))
    x = d.sample()
    assert bool(d.support.check(x).all())
    assert torch.allclose(d.from_noise(d.noise(x)), x, atol=1e-10)
    # log_prob equals Pyro's generic change of variables through the support map
    generic = dist.TransformedDistribution.log_prob(d, x)
    assert torch.allclose(d.log_prob(x), generic, atol=1e-8)
    # standardisation is fitted on the unconstrained values
    mech.standardize_from(x, d.context)
    z = torch.distributions.biject_to(d.support).inv(x)
    assert torch.allclose(mech.value_loc, z.reshape(-1, *event_shape).mean(0))


def test_positive_locscale_root_is_lognormal():
    mech = LocScaleMechanism(support="positive").double()
    x = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    assert torch.allclose(mech().log_prob(x), dist.LogNormal(0.0, 1.0).log_prob(x))
    with pytest.raises(ValueError, match="unknown support"):
        LocScaleMechanism(support="simplex")
