"""Image mechanisms: exact inverse, log-det, shapes, dequantisation, fitting,
counterfactuals by abduction."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from torch.autograd.functional import jacobian

from pyro_causalgen.errors import ShapeError, UnknownSiteError
from pyro_causalgen.infer.fit import fit
from pyro_causalgen.infer.image_eval import (
    counterfactual,
    image_bits_per_dim,
    sample_do,
    save_image_grid,
)
from pyro_causalgen.mechanisms.image import (
    ImageFlowMechanism,
    bits_per_dim,
    dequantize,
    quantize,
    squeeze2d,
    unsqueeze2d,
)

PARENTS = {"t": (), "i": ()}


def _mech(shape=(1, 14, 14), levels=1, device="cpu", dtype=torch.float32, **kw):
    kw = {"steps": 2, "hidden": 8, **kw}
    mech = ImageFlowMechanism(shape, parents=PARENTS, levels=levels, **kw)
    # perturb the zero-initialised couplings and ActNorm so the flow is not ~identity
    with torch.no_grad():
        for p in mech.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mech.to(device=device, dtype=dtype)


def _images(n, shape=(1, 14, 14), device="cpu", dtype=torch.float32):
    return (255 * torch.rand(n, *shape)).floor().to(device=device, dtype=dtype) + 0.5


def test_squeeze_roundtrip():
    x = torch.randn(2, 3, 8, 6)
    y = squeeze2d(x)
    assert y.shape == (2, 12, 4, 3)
    assert torch.equal(unsqueeze2d(y), x)
    # a 2 x 2 patch becomes the channels of one position
    assert torch.equal(y[0, :4, 0, 0], x[0, 0, :2, :2].T.reshape(-1)[[0, 2, 1, 3]])


@pytest.mark.parametrize(
    "shape,levels", [((1, 14, 14), 1), ((1, 8, 8), 2), ((2, 4, 4), 1)]
)
def test_inverse_is_exact(shape, levels, device, dtype):
    mech = _mech(shape, levels, device, dtype)
    t, i = (
        torch.randn(5, device=device, dtype=dtype),
        torch.randn(5, device=device, dtype=dtype),
    )
    d = mech(t=t, i=i)
    x = _images(5, shape, device, dtype)
    u = d.noise(x)
    assert u.shape == x.shape and torch.isfinite(u).all()
    tol = 1e-3 if dtype == torch.float32 else 1e-8
    assert torch.allclose(d.from_noise(u), x, atol=tol * 256)
    v = torch.randn_like(x)
    assert torch.allclose(d.noise(d.from_noise(v)), v, atol=tol * 10)


def test_log_det_matches_autograd():
    mech = _mech((1, 4, 4), 1, dtype=torch.float64)
    ctx = {
        "t": torch.tensor(0.3, dtype=torch.float64),
        "i": torch.tensor(-1.0, dtype=torch.float64),
    }
    to_noise = mech(**ctx).to_noise
    x = _images(1, (1, 4, 4), dtype=torch.float64)[0]
    jac = jacobian(lambda v: to_noise(v.reshape(1, 4, 4)).reshape(-1), x.reshape(-1))
    expected = torch.linalg.slogdet(jac)[1]
    u, ladj = to_noise.call_and_ladj(x)
    assert ladj.shape == ()
    assert torch.allclose(ladj, expected, atol=1e-8)
    # and log_prob = log N(u) + ladj
    mech.eval()
    lp = mech(**ctx).log_prob(x)
    normal = -0.5 * (u**2).sum() - 8 * math.log(2 * math.pi)
    assert torch.allclose(lp, normal + expected, atol=1e-8)


def test_shapes_broadcast_parent_batch_dims():
    mech = _mech()
    t = torch.randn(2, 1, 3)  # e.g. a world dim and a plate dim
    i = torch.randn(3)
    d = mech(t=t, i=i)
    assert d.batch_shape == (2, 1, 3) and d.event_shape == (1, 14, 14)
    x = d.sample()
    assert x.shape == (2, 1, 3, 1, 14, 14)
    mech.eval()
    assert d.log_prob(x).shape == (2, 1, 3)
    # unbatched-over-worlds noise predicts in every world
    u = torch.randn(3, 1, 14, 14)
    xs = d.from_noise(u)
    assert xs.shape == (2, 1, 3, 1, 14, 14)
    one = mech(t=t[1, 0], i=i).from_noise(u)
    assert torch.allclose(xs[1, 0], one, atol=1e-4)
    assert not torch.allclose(xs[0, 0], xs[1, 0])  # the context matters
    # a root image mechanism (no parents)
    root = ImageFlowMechanism((1, 4, 4), hidden=4, steps=1)
    assert root().sample(torch.Size([2])).shape == (2, 1, 4, 4)


def test_errors_name_the_site_and_shape():
    with pytest.raises(ShapeError, match="'img'.*divisible"):
        ImageFlowMechanism((1, 14, 14), parents=PARENTS, levels=2, name="img")
    with pytest.raises(ShapeError, match="not \\(C, H, W\\)"):
        ImageFlowMechanism((14, 14), parents=PARENTS, name="img")
    mech = ImageFlowMechanism((1, 4, 4), parents=PARENTS, hidden=4, name="img")
    d = mech(t=torch.zeros(2), i=torch.zeros(2))
    with pytest.raises(ShapeError, match="'img'.*\\(3, 4\\)"):
        d.noise(torch.zeros(3, 4))
    with pytest.raises(ShapeError, match="'img'.*missing parent"):
        mech(t=torch.zeros(2))


def test_dequantisation_and_bits_per_dim():
    mech = _mech((1, 4, 4))
    d = mech(t=torch.zeros(4), i=torch.zeros(4))
    x = _images(4, (1, 4, 4)) - 0.5
    mech.train()
    a, b = d.log_prob(x), d.log_prob(x)
    assert not torch.allclose(a, b)  # training mode scores x + U[0, 1)
    mech.eval()
    assert torch.equal(d.log_prob(x), d.log_prob(x))
    assert torch.equal(dequantize(x, "center"), x + 0.5)
    v = dequantize(x)
    assert ((v >= x) & (v < x + 1)).all() and torch.equal(quantize(v), x)
    # the uniform density on [0, 256)^D is 8 bits / dim
    assert torch.allclose(
        bits_per_dim(torch.tensor(-16 * math.log(256.0)), (1, 4, 4)), torch.tensor(8.0)
    )
    bpd = image_bits_per_dim(mech, x, {"t": torch.zeros(4), "i": torch.zeros(4)})
    assert math.isfinite(bpd) and not mech.training


def test_mechanism_at_a_pyro_site_and_do():
    from pyro_causalgen.handlers import do

    mech = ImageFlowMechanism((1, 4, 4), parents=PARENTS, hidden=4, steps=1)

    def model(n):
        with pyro.plate("units", n):
            t = pyro.sample("t", pyro.distributions.Normal(0.0, 1.0))
            i = pyro.sample("i", pyro.distributions.Normal(t, 1.0))
            return pyro.sample("x", mech(t=t, i=i))

    tr = pyro.poutine.trace(model).get_trace(3)
    assert tr.nodes["x"]["value"].shape == (3, 1, 4, 4)
    assert tr.log_prob_sum().isfinite()
    tr = pyro.poutine.trace(do(model, {"t": torch.tensor(2.0)})).get_trace(3)
    assert torch.equal(tr.nodes["x"]["fn"].context[:, 0], torch.full((3,), 2.0))


def test_gradients_reach_every_parameter():
    mech = _mech((1, 8, 8), 2)
    mech.eval()
    lp = mech(t=torch.randn(4), i=torch.randn(4)).log_prob(_images(4, (1, 8, 8)))
    lp.sum().backward()
    missing = [
        n for n, p in mech.named_parameters() if p.grad is None or not p.grad.any()
    ]
    assert not missing


def test_standardize_initialises_actnorm():
    mech = ImageFlowMechanism((1, 8, 8), parents=PARENTS, hidden=8, steps=2)
    x = _images(64, (1, 8, 8)) - 0.5
    ctx = mech.context(t=3 + 2 * torch.randn(64), i=torch.randn(64))
    mech.standardize_from(x, ctx)
    assert torch.allclose(mech.context_loc, ctx.mean(0))
    mech.eval()
    u = mech(t=ctx[:, 0], i=ctx[:, 1]).noise(x + 0.5)
    u = u.detach()
    assert abs(float(u.mean())) < 0.3 and abs(float(u.std()) - 1) < 0.3


def test_short_fit_lowers_the_loss():
    from pyro_causalgen.datasets.morpho import MorphoFlowModel, sample_morpho

    data, _ = sample_morpho(192, size=8, seed=0)
    model = MorphoFlowModel(size=8, steps=1, hidden=8, flow_hidden=(8,))
    hist = fit(model, data, epochs=4, batch_size=32, lr=3e-3, seed=0, patience=None)
    assert hist.train_loss[-1] < hist.train_loss[0] - 10


def test_counterfactual_is_abduction_action_prediction(tmp_path):
    from pyro_causalgen.datasets.morpho import MorphoFlowModel, sample_morpho

    model = MorphoFlowModel(size=8, steps=1, hidden=8, flow_hidden=(8,))
    data, _ = sample_morpho(6, size=8, seed=0)
    model.eval()
    mechs, parents = model.mechanisms, model.parents
    # the identity intervention gives back the factual world
    same = counterfactual(mechs, parents, data, {"intensity": data["intensity"]})
    assert torch.equal(quantize(same["image"]), data["image"])
    assert torch.allclose(same["thickness"], data["thickness"], atol=1e-4)
    # do(thickness): intensity and image are re-predicted from their abducted noise
    cf = counterfactual(mechs, parents, data, {"thickness": 4.0})
    assert torch.equal(cf["thickness"], torch.full((6,), 4.0))
    u_i = model.intensity(thickness=data["thickness"]).noise(data["intensity"])
    expected = model.intensity(thickness=cf["thickness"]).from_noise(u_i)
    assert torch.allclose(cf["intensity"], expected)
    u_x = model.image(thickness=data["thickness"], intensity=data["intensity"]).noise(
        data["image"] + 0.5
    )
    x_cf = model.image(thickness=cf["thickness"], intensity=cf["intensity"]).from_noise(
        u_x
    )
    assert torch.allclose(cf["image"], x_cf, atol=1e-3)
    with pytest.raises(UnknownSiteError, match="nope"):
        counterfactual(mechs, parents, data, {"nope": 1.0})
    draws = sample_do(mechs, parents, 5, {"intensity": 200.0})
    assert draws["image"].shape == (5, 1, 8, 8)
    assert torch.equal(draws["intensity"], torch.full((5,), 200.0))
    path = save_image_grid(
        {"factual": data["image"], "cf": cf["image"]}, tmp_path / "g.png"
    )
    assert path.stat().st_size > 0


def test_twin_world_handler_agrees_with_explicit_counterfactual():
    from pyro_causalgen.datasets.morpho import MorphoFlowModel, sample_morpho

    handlers = pytest.importorskip("pyro_causalgen.handlers")
    model = MorphoFlowModel(size=8, steps=1, hidden=8, flow_hidden=(8,))
    model.eval()
    data, _ = sample_morpho(6, size=8, seed=0)
    obs = {**data, "image": dequantize(data["image"], "center")}
    with torch.no_grad():
        with handlers.TwinWorldCounterfactual(
            obs, {"thickness": torch.tensor(4.0)}
        ) as h:
            model(n=6)
        via_handler = h.world_values("counterfactual")
        explicit = counterfactual(
            model.mechanisms, model.parents, data, {"thickness": 4.0}
        )
    for site in ("thickness", "intensity", "image"):
        assert torch.allclose(via_handler[site], explicit[site], atol=1e-4), site
    assert torch.allclose(h.world_values("factual")["image"], obs["image"], atol=1e-2)
