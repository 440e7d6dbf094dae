"""The graph builder: order, graph errors, shapes, mixed mechanisms, the log joint."""

from __future__ import annotations

import pyro.poutine as poutine
import pytest
import torch

from pyro_causalgen.errors import CausalModelError, DataError, UnknownSiteError
from pyro_causalgen.mechanisms import FlowMechanism, LocScaleMechanism
from pyro_causalgen.mechanisms.stacked import StackedFlowMechanism
from pyro_causalgen.scm import StructuralCausalModel, topological_order


def test_topological_order_puts_parents_first_and_is_stable():
    graph = {"y": ["x", "z"], "z": ["x"], "x": [], "w": []}
    order = topological_order(graph)
    assert order == ["w", "x", "z", "y"]
    for child, pas in graph.items():
        assert all(order.index(p) < order.index(child) for p in pas)
    assert topological_order(dict(reversed(graph.items()))) == order


@pytest.mark.parametrize(
    "graph,error,match",
    [
        ({"x": ["y"], "y": ["z"], "z": ["x"]}, CausalModelError, "cycle: .*->.*->"),
        ({"x": ["x"]}, CausalModelError, "self-loop x -> x"),
        ({"x": [], "y": ["q"]}, UnknownSiteError, "edge q -> y"),
    ],
)
def test_bad_graphs_raise_naming_the_edge(graph, error, match):
    with pytest.raises(error, match=match):
        StructuralCausalModel(graph)


def test_unknown_variables_in_options_raise():
    with pytest.raises(UnknownSiteError, match="'q'|\\['q'\\]"):
        StructuralCausalModel({"x": []}, shapes={"q": (2,)})
    with pytest.raises(UnknownSiteError, match="q"):
        StructuralCausalModel({"x": []}, mechanism={"q": "maf"})
    with pytest.raises(UnknownSiteError, match="no variable 'q'"):
        StructuralCausalModel({"x": []}).mechanism("q")


def test_shapes_and_mixed_mechanisms(device):
    scm = StructuralCausalModel(
        {"a": [], "b": ["a"], "img": ["a"], "c": ["b", "img"]},
        shapes={"img": (4,)},
        mechanism={"a": "locscale", "b": "nsf", "img": "maf", "c": "nsf"},
        mechanism_kwargs={"hidden_features": (8,)},
    ).to(device)
    assert scm.variables == ["a", "b", "img", "c"]
    assert isinstance(scm.mechanism("a"), LocScaleMechanism)
    assert isinstance(scm.mechanism("img"), FlowMechanism)  # vector: not stacked
    assert isinstance(scm.mechanism("b"), StackedFlowMechanism)
    assert scm.mechanism("c").group is scm.mechanism("b").group
    assert list(scm.mechanisms) == scm.variables
    out = scm(n=7)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "a": (7,),
        "b": (7,),
        "img": (7, 4),
        "c": (7,),
    }
    assert all(v.device.type == device.type for v in out.values())
    one = scm()  # no plate: a single unit
    assert one["img"].shape == (4,) and one["c"].shape == ()


@pytest.mark.parametrize("stack", [True, False])
def test_log_prob_data_equals_the_conditioned_trace(stack, device, dtype):
    scm = StructuralCausalModel(
        {"a": [], "b": ["a"], "v": ["a"], "c": ["b", "v"]},
        shapes={"v": (2,)},
        mechanism={"a": "nsf", "b": "maf", "v": "nsf", "c": "nsf"},
        mechanism_kwargs={"transforms": 1, "hidden_features": (8,)},
        stack=stack,
    ).to(device=device, dtype=dtype)
    with torch.no_grad():
        for p in scm.parameters():
            p.add_(0.2 * torch.randn_like(p))
    n = 11
    data = {k: v.detach() for k, v in scm(n=n).items()}
    lp = scm.log_prob_data(data)
    assert lp.shape == (n,)
    trace = poutine.trace(poutine.condition(scm, data=data)).get_trace(n=n)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert torch.allclose(lp.sum(), trace.log_prob_sum(), atol=tol, rtol=tol)
    if stack:  # nsf and maf scalar sites form two stacks; the vector site stays
        assert sorted(tuple(g.sites) for g in scm.stacks) == [("a", "c"), ("b",)]
        assert list(scm.unstacked) == ["v"]


def test_log_prob_data_missing_column_names_it():
    scm = StructuralCausalModel({"x": [], "y": ["x"]}, mechanism="locscale")
    with pytest.raises(DataError, match=r"\['y'\]"):
        scm.log_prob_data({"x": torch.zeros(3)})


def test_config_rebuilds_an_identical_model():
    scm = StructuralCausalModel(
        {"x": [], "y": ["x"]}, mechanism_kwargs={"hidden_features": (4,)}, stack=True
    )
    again = StructuralCausalModel(**scm.config)
    again.load_state_dict(scm.state_dict())
    data = {"x": torch.randn(5), "y": torch.randn(5)}
    assert torch.equal(scm.log_prob_data(data), again.log_prob_data(data))
