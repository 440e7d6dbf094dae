"""Algebraic laws of the counterfactual handlers over the registry of example SCMs."""

from __future__ import annotations

import pytest
import torch

from pyro_causalgen import do
from pyro_causalgen.handlers import TwinWorldCounterfactual
from pyro_causalgen.infer.counterfactual import counterfactual
from pyro_causalgen.testing import (
    EXAMPLES,
    assert_close,
    check_counterfactual_laws,
    example_scm,
    sample_observations,
)

N = 16
OPTIONS = {"num_particles": 32}


@pytest.fixture(params=EXAMPLES)
def example(request, device):
    return example_scm(request.param, device=device, dtype=torch.float64)


def test_laws_hold_for_every_example(example):
    obs = sample_observations(example, N)
    out = check_counterfactual_laws(
        example.model, obs, {example.treatment: example.value}, N, options=OPTIONS
    )
    assert set(out["factual"]) >= set(example.parents)


def test_non_descendants_are_equal_across_worlds(example):
    obs = sample_observations(example, N)
    out = counterfactual(
        example.model, obs, {example.treatment: example.value}, N, **OPTIONS
    )
    downstream = example.descendants(example.treatment) | {example.treatment}
    for site in example.parents:
        if site not in downstream:
            assert torch.equal(out["factual"][site], out["counterfactual"][site]), site


def test_empty_intervention_gives_counterfactual_equal_to_factual(example):
    obs = sample_observations(example, N)
    for observations in (obs, {}):
        out = counterfactual(example.model, observations, {}, N, **OPTIONS)
        for site, v in out["factual"].items():
            assert torch.equal(v, out["counterfactual"][site]), site


def test_identity_intervention_gives_counterfactual_equal_to_factual(example):
    """do(X = X) (a shift by the identity) changes nothing, in any world."""
    obs = sample_observations(example, N)
    with torch.no_grad():
        h = TwinWorldCounterfactual(obs)
        h(do(example.model, {example.treatment: lambda v: v}))(N)
    for site in example.parents:
        f = h.gather(h.values[site], "factual", h.event_dims[site])
        cf = h.gather(h.values[site], "counterfactual", h.event_dims[site])
        assert_close(cf.double(), f.double(), 1e-9, site)  # flows: inverse round trip


def test_interventions_on_disjoint_sites_commute(example):
    """Two do handlers on different sites, in either order, with the same noise."""
    obs = sample_observations(example, N)
    first = example.treatment
    others = [s for s in example.parents if s != first and s not in example.discrete]
    second = others[-1]
    results = []
    for order in ((first, second), (second, first)):
        acts = {first: example.value, second: 0.25}
        model = example.model
        for site in order:
            model = do(model, {site: acts[site]})
        state = torch.random.get_rng_state()
        with torch.no_grad():
            h = TwinWorldCounterfactual(obs)
            h(model)(N)
        torch.random.set_rng_state(state)
        results.append(h.world_values("counterfactual"))
    for site, v in results[0].items():
        assert_close(v.double(), results[1][site].double(), 0.0, site)
