"""The fast path of ``counterfactual`` equals the twin-world handler, bit for bit."""

from __future__ import annotations

import pyro.poutine as poutine
import pytest
import torch

from pyro_causalgen import StructuralCausalModel
from pyro_causalgen.handlers import TwinWorldCounterfactual
from pyro_causalgen.infer.counterfactual import counterfactual
from pyro_causalgen.infer.fast_counterfactual import fast_twin, stacked_noise

N = 64

GRAPHS = {
    "chain": {"a": [], "b": ["a"], "c": ["b"], "d": ["c"]},
    # mixed context widths (1, 2, 3), two roots, a collider and a fork
    "dag": {
        "a": [],
        "r": [],
        "b": ["a"],
        "c": ["a", "r"],
        "d": ["b", "c", "r"],
        "e": ["b"],
        "f": ["d", "e"],
    },
}


def make_scm(graph: str, flow: str, device: torch.device) -> StructuralCausalModel:
    """``flow``: "nsf" or "maf", "+affine" for a conditional affine first step."""
    flow, _, affine = flow.partition("+")
    kwargs = {"hidden_features": (8, 8), "transforms": 2, "affine": bool(affine)}
    if flow == "nsf":
        kwargs["bins"] = 4
    scm = StructuralCausalModel(GRAPHS[graph], mechanism=flow, mechanism_kwargs=kwargs)
    scm = scm.to(device)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial standardisation of values and contexts
        for view in scm.mechanisms.values():
            for buf in ("value_loc", "context_loc"):
                b = getattr(view, buf)
                b.copy_(torch.randn(b.shape, generator=gen))
            for buf in ("value_scale", "context_scale"):
                b = getattr(view, buf)
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    return scm.eval()


def handler_path(scm, data, interventions) -> dict:
    handler = TwinWorldCounterfactual(data, interventions)
    handler(scm)(N)
    return {w: handler.world_values(w) for w in handler.world_names}


def assert_equal(got: dict, ref: dict) -> None:
    assert got.keys() == ref.keys()
    for world in ref:
        assert list(got[world]) == list(ref[world])
        for site, value in ref[world].items():
            assert got[world][site].shape == value.shape, (world, site)
            assert torch.equal(got[world][site], value), (world, site)


def per_row(device: torch.device) -> torch.Tensor:
    return torch.linspace(-2.0, 2.0, N, device=device)


CASES = {
    "chain": [
        {"a": 1.0},
        {"b": -0.5},
        {"a": "rows"},
        {"a": 0.3, "c": "rows"},  # second target downstream of the first
        {"d": 2.0},  # a leaf: nothing downstream
        {},
    ],
    "dag": [
        {"a": 1.0},
        {"r": "rows"},
        {"c": 0.5, "e": "rows"},
        {"b": 1.0, "d": -1.0},
        {"a": torch.tensor(2.0)},
    ],
}


@pytest.mark.parametrize("flow", ["nsf", "maf", "nsf+affine"])
@pytest.mark.parametrize("graph", list(GRAPHS))
def test_fast_path_equals_handler(graph, flow, device):
    scm = make_scm(graph, flow, device)
    with torch.no_grad():
        data = {k: v.detach() for k, v in scm(N).items()}
    for case in CASES[graph]:
        interventions = {
            k: per_row(device)
            if isinstance(v, str)
            else (v.to(device) if isinstance(v, torch.Tensor) else v)
            for k, v in case.items()
        }
        fast = fast_twin(scm, data, interventions, (N,), {})
        assert fast is not None, case  # the fast path applies
        ref = handler_path(scm, data, interventions)
        assert_equal(fast, ref)
        assert_equal(counterfactual(scm, data, interventions, N), ref)


def test_row_blocks_give_the_handlers_values(monkeypatch, device):
    """Blocks of 10 rows (the last one short): the handler's values, up to the
    summation order of a matrix product over fewer rows (float64)."""
    import pyro_causalgen.infer.fast_counterfactual as fast

    scm = make_scm("dag", "nsf", device).double()
    with torch.no_grad():
        data = {k: v.detach() for k, v in scm(N).items()}
    interventions = {"c": 0.5, "e": per_row(device).double()}
    ref = handler_path(scm, data, interventions)
    monkeypatch.setattr(fast, "ROW_BLOCK", 10)
    got = fast_twin(scm, data, interventions, (N,), {})
    assert got is not None
    for world in ref:
        for site, value in ref[world].items():
            assert got[world][site].shape == value.shape
            torch.testing.assert_close(got[world][site], value, rtol=1e-12, atol=1e-12)


def test_fast_path_keeps_gradients(device):
    scm = make_scm("chain", "nsf", device)
    with torch.no_grad():
        data = {k: v.detach() for k, v in scm(N).items()}
    out = counterfactual(scm, data, {"a": 1.0}, N)["counterfactual"]["d"]
    out.sum().backward()
    assert scm.stacks[0].weights[0].grad is not None


def test_fast_path_declines_what_it_does_not_cover(device):
    scm = make_scm("chain", "nsf", device)
    with torch.no_grad():
        data = {k: v.detach() for k, v in scm(N).items()}
    partial = {k: v for k, v in data.items() if k != "c"}
    declined = [
        (partial, {"a": 1.0}, (N,)),  # an unobserved site
        (data, {"a": lambda x: x + 1}, (N,)),  # a shift
        (data, {"zz": 1.0}, (N,)),  # an unknown site: the handler raises
        (data, {"a": torch.ones(N, 1, device=device)}, (N,)),  # grows the shape
        (data, {"a": 1.0}, ()),  # no plate
        ({k: v.double() for k, v in data.items()}, {"a": 1.0}, (N,)),  # dtype
    ]
    for obs, interventions, args in declined:
        assert fast_twin(scm, obs, interventions, args, {}) is None
    with poutine.trace():  # an outer handler must see the sites
        assert fast_twin(scm, data, {"a": 1.0}, (N,), {}) is None
    locscale = StructuralCausalModel(GRAPHS["chain"], mechanism="locscale").to(device)
    with torch.no_grad():
        ls_data = {k: v.detach() for k, v in locscale(N).items()}
    assert fast_twin(locscale, ls_data, {"a": 1.0}, (N,), {}) is None


@pytest.mark.parametrize("flow", ["nsf", "maf", "nsf+affine"])
def test_stacked_noise_equals_each_sites_inverse(flow, device):
    scm = make_scm("dag", flow, device)
    with torch.no_grad():
        data = {k: v.detach() for k, v in scm(N).items()}
    group = scm.stacks[0]
    u = stacked_noise(group, data, list(group.sites))
    for site, view in group.views.items():
        d = view(**{p: data[p] for p in view.parents})
        assert torch.equal(u[site], d.to_noise.call_and_ladj(data[site])[0]), site


def test_fast_path_declines_models_with_forward_hooks(device):
    scm = make_scm("chain", "nsf", device)
    with torch.no_grad():
        data = {k: v.detach() for k, v in scm(N).items()}
    seen = []
    handle = scm.register_forward_hook(lambda *_: seen.append(1))
    assert fast_twin(scm, data, {"a": 1.0}, (N,), {}) is None
    counterfactual(scm, data, {"a": 1.0}, N)
    assert seen == [1]
    handle.remove()
