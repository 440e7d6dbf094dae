"""Stacked flow mechanisms: batched scoring equals per-site scoring, exactly."""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from zuko.transforms import (
    ComposedTransform,
    DependentTransform,
    MonotonicRQSTransform,
)
from zuko.utils import unpack

from pyro_causalgen import StructuralCausalModel, fit, load, save
from pyro_causalgen.errors import DataError
from pyro_causalgen.mechanisms import FlowMechanism, MechanismDistribution
from pyro_causalgen.mechanisms.spline import (
    RQSFlowTransform,
    rqs_flow,
    rqs_forward,
    rqs_inverse,
    rqs_table,
)
from pyro_causalgen.mechanisms.stacked import StackedFlowMechanism, StackedFlows

# a DAG with roots, vector parents, a wide fan-in and one site without children
PARENTS = {"a": {}, "b": {"a": ()}, "v": {}, "c": {"a": (), "v": (3,)}, "d": {}}
# "+affine": the flow starts with a conditional affine step
FLOWS = ["nsf", "maf", "nsf+affine", "maf+affine"]


def _tol(dtype: torch.dtype) -> dict:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-9}


def _data(n, device, dtype, gen_seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(gen_seed)
    out = {k: 1.5 * torch.randn(n, generator=g) + 0.5 for k in "abcd"}
    out["v"] = torch.randn(n, 3, generator=g)
    return {k: v.to(device=device, dtype=dtype) for k, v in out.items()}


def _group(flow, device, dtype) -> StackedFlows:
    parents = {k: v for k, v in PARENTS.items() if k != "v"}
    kind, _, affine = flow.partition("+")
    group = StackedFlows(
        parents, flow=kind, transforms=2, hidden_features=(8, 6), affine=bool(affine)
    )
    group = group.to(device=device, dtype=dtype)
    with torch.no_grad():  # move away from the initialisation and unit standardisation
        for p in group.parameters():
            p.add_(0.3 * torch.randn_like(p))
        for view in group.views.values():
            view.value_loc.add_(0.4)
            view.value_scale.mul_(1.7)
            view.context_loc.add_(0.2)
            view.context_scale.mul_(1.3)
    return group


def _per_site(group: StackedFlows, data) -> torch.Tensor:
    cols = []
    for s in group.sites:
        view = group.views[s]
        pa = {p: data[p] for p in view.parents}
        cols.append(view(**pa).log_prob(data[s]).expand(data["a"].shape))
    return torch.stack(cols, -1)


@pytest.mark.parametrize("flow", FLOWS)
def test_batched_log_prob_equals_views_and_zuko(flow, device, dtype):
    group = _group(flow, device, dtype)
    data = _data(7, device, dtype)
    batched = group.log_prob_sites(data)
    assert batched.shape == (7, 4) and batched.device.type == device.type
    assert torch.allclose(batched, _per_site(group, data), **_tol(dtype))
    # the per-site flow is a zuko flow: unstacked FlowMechanisms agree
    mechs = group.unstack()
    assert all(isinstance(m, FlowMechanism) for m in mechs.values())
    for i, s in enumerate(group.sites):
        pa = {p: data[p] for p in mechs[s].parents}
        ref = mechs[s](**pa).log_prob(data[s])
        assert torch.allclose(batched[:, i], ref.expand(7), **_tol(dtype)), s
    # and stacking them back is exact
    again = StackedFlows.from_mechanisms(mechs)
    assert torch.allclose(again.log_prob_sites(data), batched, **_tol(dtype))


@pytest.mark.parametrize("flow", FLOWS)
def test_views_are_mechanisms_with_exact_inverse(flow, device, dtype):
    group = _group(flow, device, dtype)
    view = group.views["c"]
    assert isinstance(view, StackedFlowMechanism)
    a = torch.randn(2, 1, 5, device=device, dtype=dtype)  # extra leading batch dims
    v = torch.randn(5, 3, device=device, dtype=dtype)
    d = view(a=a, v=v)
    assert isinstance(d, MechanismDistribution) and d.batch_shape == (2, 1, 5)
    u = torch.randn(2, 1, 5, device=device, dtype=dtype)
    x = d.from_noise(u)
    assert x.shape == u.shape and x.dtype == dtype
    assert torch.allclose(d.noise(x), u, **_tol(dtype))
    # log_prob is the change of variables through the noise map
    x = x.detach().requires_grad_(True)
    uu = d.noise(x)
    (grad,) = torch.autograd.grad(uu.sum(), x)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(uu) + grad.abs().log()
    assert torch.allclose(d.log_prob(x), expected, **_tol(dtype))


@pytest.mark.parametrize("flow", FLOWS)
def test_gradients_reach_every_parameter(flow, device, dtype):
    group = _group(flow, device, dtype)
    group.log_prob_sum(_data(16, device, dtype)).sum().backward()
    for name, p in group.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_padding_weights_get_no_gradient(device):
    group = _group("nsf+affine", device, torch.float32)
    group.log_prob_sum(_data(16, device, torch.float32)).sum().backward()
    L = group.transforms
    for slot, width in enumerate(group._context_widths):
        pad = group.weights[0].grad[slot * L : (slot + 1) * L, width:]
        assert torch.all(pad == 0), group._internal[slot]
        assert torch.all(group.affine_weights[0].grad[slot, width:] == 0)


@pytest.mark.parametrize("site,non_parents", [("b", ["c", "d", "v"]), ("d", "abcv")])
def test_no_information_leaks_between_sites(site, non_parents, device, dtype):
    group = _group("nsf", device, dtype)
    data = _data(9, device, dtype)
    i = group.sites.index(site)
    before = group.log_prob_sites(data)[:, i]
    for other in non_parents:
        moved = dict(data)
        moved[other] = data[other] + 3.0 * torch.randn_like(data[other])
        after = group.log_prob_sites(moved)[:, i]
        assert torch.equal(before, after), f"{site} depends on non-parent {other}"
    # sanity: the check can fail, moving a parent (or the site) changes it
    moved = dict(data)
    moved["a" if site == "b" else site] = data["a" if site == "b" else site] + 1.0
    assert not torch.equal(before, group.log_prob_sites(moved)[:, i])


def _scm(flow, device, dtype, stack=True, affine=False) -> StructuralCausalModel:
    opts = {"transforms": 2, "hidden_features": (8,), "affine": affine}
    scm = StructuralCausalModel(
        {"a": [], "b": ["a"], "v": [], "c": ["a", "v"], "d": []},
        shapes={"v": (3,)},
        mechanism={"a": flow, "b": flow, "v": "nsf", "c": flow, "d": "locscale"},
        mechanism_kwargs={k: opts for k in ("a", "b", "c", "v")},
        stack=stack,
    )
    return scm.to(device=device, dtype=dtype)


@pytest.mark.parametrize("flow", FLOWS)
def test_scm_stacks_scalar_flows_and_scores_like_the_pyro_trace(flow, device, dtype):
    flow, _, affine = flow.partition("+")
    opts = {"transforms": 2, "affine": bool(affine)}
    scm = StructuralCausalModel(
        {"a": [], "b": ["a"], "v": [], "c": ["a", "v"], "d": []},
        shapes={"v": (3,)},
        mechanism={"a": flow, "b": flow, "v": flow, "c": flow, "d": "locscale"},
        mechanism_kwargs={k: opts for k in "abcv"},
    ).to(device=device, dtype=dtype)
    assert [g.sites for g in scm.stacks] == [["a", "b", "c"]]
    assert sorted(scm.unstacked) == ["d", "v"]  # vector and loc-scale sites stay
    data = _data(6, device, dtype)
    fit(scm, data, epochs=1, seed=0, batch_size=4)
    lp = scm.log_prob_data(data)
    trace = poutine.trace(poutine.condition(scm, data=data)).get_trace(n=6)
    assert torch.allclose(lp.sum(), trace.log_prob_sum(), **_tol(dtype))
    per_site = sum(
        scm.mechanism(s)(**{p: data[p] for p in scm.parents[s]}).log_prob(data[s])
        for s in scm.variables
    )
    assert torch.allclose(lp, per_site, **_tol(dtype))


@pytest.mark.parametrize("affine", [False, True])
def test_stacked_and_unstacked_models_define_the_same_distribution(
    affine, device, dtype
):
    stacked = _scm("nsf", device, dtype, affine=affine)
    plain = _scm("nsf", device, dtype, stack=False, affine=affine)
    group = stacked.stacks[0]
    with torch.no_grad():
        for s, mech in group.unstack().items():  # copy the stacked weights over
            plain.unstacked[s].load_state_dict(mech.state_dict())
        plain.unstacked["v"].load_state_dict(stacked.unstacked["v"].state_dict())
        plain.unstacked["d"].load_state_dict(stacked.unstacked["d"].state_dict())
    data = _data(5, device, dtype)
    assert torch.allclose(
        stacked.log_prob_data(data), plain.log_prob_data(data), **_tol(dtype)
    )
    # sampling follows the topological order with the same noise
    pyro.set_rng_seed(3)
    x1 = stacked(n=4)
    pyro.set_rng_seed(3)
    x2 = plain(n=4)
    for k in x1:
        assert torch.allclose(x1[k], x2[k], **_tol(dtype)), k


def test_sampling_is_in_topological_order_and_consistent(device):
    scm = _scm("nsf", device, torch.float32)
    trace = poutine.trace(scm).get_trace(n=50)
    names = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    assert [n for n in names if n != "units"] == scm.variables
    # each sampled value is its mechanism's image of the noise it abducts to
    for s in scm.variables:
        fn = trace.nodes[s]["fn"]
        x = trace.nodes[s]["value"]
        assert torch.allclose(fn.from_noise(fn.noise(x)), x, atol=1e-4), s
    vals = {s: trace.nodes[s]["value"] for s in scm.variables}
    b_fn = scm.mechanism("b")(a=vals["a"])
    assert torch.allclose(
        b_fn.log_prob(vals["b"]), trace.nodes["b"]["fn"].log_prob(vals["b"])
    )


def test_interventions_reach_stacked_sites(device):
    from pyro_causalgen import do

    scm = _scm("nsf", device, torch.float32)
    pyro.set_rng_seed(1)
    base = scm(n=20)
    pyro.set_rng_seed(1)
    out = do(scm, {"a": torch.tensor(2.0, device=device)})(n=20)
    assert torch.all(out["a"] == 2.0)
    assert torch.allclose(out["d"], base["d"]) and not torch.allclose(
        out["b"], base["b"]
    )
    # counterfactual by abduction through the view: b's noise is kept
    u = scm.mechanism("b")(a=base["a"]).noise(base["b"])
    cf = scm.mechanism("b")(a=out["a"]).from_noise(u)
    assert torch.allclose(cf, out["b"], atol=1e-4)


@pytest.mark.parametrize("flow,affine", [("maf", False), ("nsf", True)])
def test_save_load_round_trips_exactly(flow, affine, tmp_path, device):
    scm = _scm(flow, device, torch.float32, affine=affine)
    data = _data(120, device, torch.float32)
    fit(scm, data, epochs=2, seed=0)
    save(scm, tmp_path / "m.pt")
    loaded = load(tmp_path / "m.pt", map_location=device)
    assert loaded.config == scm.config and loaded.config["stack"] is True
    state = scm.state_dict()
    assert state.keys() == loaded.state_dict().keys()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert loaded.mechanism("b").value_loc.item() != 0.0  # standardisation survived
    assert torch.equal(loaded.log_prob_data(data), scm.log_prob_data(data))
    group = scm.stacks[0]
    save(group, tmp_path / "g.pt")
    assert torch.equal(
        load(tmp_path / "g.pt").log_prob_sites(data), group.log_prob_sites(data)
    )


def test_fit_with_stacking_matches_per_site_training():
    """One step of fit on a stacked model equals one step on the unstacked model."""
    torch.manual_seed(0)
    data = _data(64, "cpu", torch.float64)
    stacked = _scm("nsf", "cpu", torch.float64)
    plain = _scm("nsf", "cpu", torch.float64, stack=False)
    for s, mech in stacked.stacks[0].unstack().items():
        plain.unstacked[s].load_state_dict(mech.state_dict())
    for s in ("v", "d"):
        plain.unstacked[s].load_state_dict(stacked.unstacked[s].state_dict())
    h1 = fit(stacked, data, epochs=1, batch_size=64, val_fraction=0.0, seed=0)
    h2 = fit(plain, data, epochs=1, batch_size=64, val_fraction=0.0, seed=0)
    assert h1.train_loss[0] == pytest.approx(h2.train_loss[0], rel=1e-10)
    for s, mech in stacked.stacks[0].unstack().items():
        for k, v in mech.state_dict().items():
            assert torch.allclose(v, plain.unstacked[s].state_dict()[k], atol=1e-10), k


def test_bad_inputs_name_the_column(device):
    group = _group("nsf", device, torch.float32)
    data = _data(3, device, torch.float32)
    del data["v"]
    with pytest.raises(DataError, match="'v'"):
        group.log_prob_sites(data)
    with pytest.raises(ValueError, match="unknown flow"):
        StackedFlows({"a": []}, flow="realnvp")
    scm = _scm("nsf", device, torch.float32)
    with pytest.raises(DataError, match=r"\['c'\]"):
        scm.log_prob_data(
            {k: v for k, v in _data(3, device, torch.float32).items() if k != "c"}
        )


def _zuko_spline(phi: torch.Tensor, bins: int) -> MonotonicRQSTransform:
    shapes = [(bins,), (bins,), (bins - 1,)]
    return MonotonicRQSTransform(*unpack(phi, shapes), slope=1e-3)


@pytest.mark.parametrize("bins", [8, 3])
def test_fused_spline_equals_zuko(bins, device, dtype):
    """Values, ladj, inverse and gradients of the fused spline are zuko's."""
    g = torch.Generator().manual_seed(bins)
    phi = 1.5 * torch.randn(6, 40, 3 * bins - 1, generator=g)
    x = 4.0 * torch.randn(6, 40, generator=g)
    x[0, :6] = torch.tensor([-12.0, -5.0, -4.999, 4.999, 5.0, 30.0])  # edges, outside
    phi, x = phi.to(device, dtype), x.to(device, dtype)
    assert (x.abs() > 5).any() and (x.abs() < 5).any()
    ref = _zuko_spline(phi, bins)
    tol = _tol(dtype)
    table = rqs_table(phi, bins)
    assert table.shape == (6, 40, 3, bins + 1)
    y, ladj = rqs_forward(x, table)
    y_ref, ladj_ref = ref.call_and_ladj(x)
    assert torch.allclose(y, y_ref, **tol) and torch.allclose(ladj, ladj_ref, **tol)
    outside = x.abs() > 5.0
    assert torch.equal(y[outside], x[outside]) and torch.all(ladj[outside] == 0)
    assert torch.allclose(rqs_inverse(y_ref, table), ref.inv(y_ref), **tol)
    assert torch.allclose(rqs_inverse(y, table), x, **tol)
    # gradients (hand-written backward) against autograd through zuko; off the
    # knots at +-5 exactly, where zuko's last knot is 5 only up to rounding
    x[0, 1], x[0, 4] = -5.5, 5.5
    phi_a = phi.clone().requires_grad_(True)
    x_a = x.clone().requires_grad_(True)
    w = torch.randn(2, 6, 40, generator=g).to(device, dtype)
    y, ladj = rqs_forward(x_a, rqs_table(phi_a, bins))
    got = torch.autograd.grad((w[0] * y + w[1] * ladj).sum(), (x_a, phi_a))
    phi_b = phi.clone().requires_grad_(True)
    x_b = x.clone().requires_grad_(True)
    y, ladj = _zuko_spline(phi_b, bins).call_and_ladj(x_b)
    want = torch.autograd.grad((w[0] * y + w[1] * ladj).sum(), (x_b, phi_b))
    for a, b in zip(got, want):
        assert torch.allclose(a, b, **tol)


def test_fused_spline_layers_compose_like_zuko(device, dtype):
    """``rqs_flow`` over ``(S, L, rows, P)`` is zuko's layers in sequence."""
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(4, 3, 30, 23, generator=g).to(device, dtype)
    x = 3.0 * torch.randn(4, 30, generator=g).to(device, dtype)
    y, ladj = rqs_flow(x, rqs_table(phi, 8))
    y_ref, ladj_ref = x, torch.zeros_like(x)
    for layer in range(3):
        y_ref, a = _zuko_spline(phi[:, layer], 8).call_and_ladj(y_ref)
        ladj_ref = ladj_ref + a
    assert torch.allclose(y, y_ref, **_tol(dtype))
    assert torch.allclose(ladj, ladj_ref, **_tol(dtype))


@pytest.mark.parametrize("table_batch", [(), (30,), (2, 30)])
def test_fused_flow_transform_is_zukos_composition(table_batch, device, dtype):
    """``RQSFlowTransform`` (what stacked views use) equals zuko's composed layers.

    Forward, inverse and log-Jacobian on ``(2, 30, 1)`` inputs, with tables that
    broadcast from a root's ``(L, P)`` or a plate's ``(L, 30, P)``.
    """
    g = torch.Generator().manual_seed(3)
    phi = torch.randn(3, *table_batch, 23, generator=g).to(device, dtype)
    x = 3.0 * torch.randn(2, 30, 1, generator=g).to(device, dtype)
    t = RQSFlowTransform(rqs_table(phi, 8))
    zuko_flow = ComposedTransform(
        *(
            DependentTransform(_zuko_spline(phi[layer].unsqueeze(-2), 8), 1)
            for layer in range(3)
        )
    )
    ref, ladj_ref = zuko_flow.call_and_ladj(x)
    y, ladj = t.call_and_ladj(x)
    tol = _tol(dtype)
    assert y.shape == x.shape and ladj.shape == (2, 30)
    assert torch.allclose(y, ref, **tol) and torch.allclose(ladj, ladj_ref, **tol)
    assert torch.allclose(t(x), y) and torch.allclose(
        t.log_abs_det_jacobian(x, y), ladj
    )
    # the inverse, by its forward residual (an inverse error is amplified up to
    # 1 / min slope where the spline is flat, so x itself is not a fair yardstick)
    x_back = t.inv(ref)
    assert torch.allclose(t(x_back), ref, **tol)
    assert torch.allclose(zuko_flow(x_back), ref, **tol)


def test_fused_spline_gradcheck():
    g = torch.Generator().manual_seed(2)
    phi = torch.randn(2, 2, 5, 23, generator=g, dtype=torch.float64)
    x = 4.0 * torch.randn(2, 5, generator=g, dtype=torch.float64)
    phi.requires_grad_(True)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: rqs_flow(a, rqs_table(b, 8)), (x, phi))


def test_cached_standardisation_follows_the_buffers(device, dtype):
    group = _group("nsf", device, dtype)
    data = _data(7, device, dtype)
    before = group.log_prob_sites(data)
    with torch.no_grad():  # in-place changes (as fit's standardisation makes)
        group.views["b"].value_loc.add_(0.5)
        group.views["c"].context_scale.mul_(2.0)
    after = group.log_prob_sites(data)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, _per_site(group, data), **_tol(dtype))
    state = {k: v.clone() for k, v in group.state_dict().items()}
    fresh = _group("nsf", device, dtype)
    fresh.log_prob_sites(data)  # fill its cache, then load over it
    fresh.load_state_dict(state)
    assert torch.allclose(fresh.log_prob_sites(data), after, **_tol(dtype))
    with torch.inference_mode():
        group.log_prob_sites(data)  # a cache built in inference mode ...
    group.log_prob_sum(data).sum().backward()  # ... is not reused for training
    other = torch.float64 if dtype == torch.float32 else torch.float32
    moved = group.to(other)
    data = {k: v.to(other) for k, v in data.items()}
    assert moved.log_prob_sites(data).dtype == other


def test_affine_step_with_identity_splines_is_a_gaussian_location_scale(device, dtype):
    """phi = 0 makes every spline the identity; the affine step's last layer set to a
    constant (b, a) then gives z = exp(a) x + b, i.e. x ~ N(-b e^-a, e^-2a), exactly
    (unit standardisation; zuko's soft clamp keeps a = 0.5 as 0.5 / (1 + 0.5 / 6.9))."""
    group = StackedFlows({"a": [], "b": ["a"]}, transforms=2, affine=True)
    group = group.to(device=device, dtype=dtype)
    with torch.no_grad():
        group.weights[-1].zero_()
        group.biases[-1].zero_()
        group.root_phi.zero_()
        group.affine_weights[-1].zero_()
        group.affine_biases[-1].copy_(torch.tensor([0.3, 0.5]))
        group.root_affine.copy_(torch.tensor([[-1.0, -0.2]]))
    data = _data(9, device, dtype)
    lp = group.log_prob_sites(data)

    def gaussian(x, shift, raw):
        log_scale = raw / (1 + abs(raw / torch.log(torch.tensor(1e-3)).item()))
        loc, sd = -shift * math.exp(-log_scale), math.exp(-log_scale)
        return torch.distributions.Normal(loc, sd).log_prob(x)

    assert torch.allclose(lp[:, 0], gaussian(data["a"], -1.0, -0.2), **_tol(dtype))
    assert torch.allclose(lp[:, 1], gaussian(data["b"], 0.3, 0.5), **_tol(dtype))


def test_fused_spline_refuses_second_derivatives():
    """Its backward is first-order: a Hessian must fail loudly, not come out zero."""
    x = torch.randn(1, 5)
    phi = torch.randn(1, 1, 5, 23)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.functional.hessian(
            lambda p: rqs_flow(x, rqs_table(p, 8))[1].sum(), phi
        )
