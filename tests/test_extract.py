"""Tests for pyro_causalgen.graph.extract: graphs read from Pyro programs."""

from __future__ import annotations

import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_causalgen.errors import UnknownSiteError
from pyro_causalgen.graph import ADMG, extract_graph, model_dependencies
from pyro_causalgen.identify import identify


def confounded(data=None):
    u = pyro.sample("u", dist.Normal(0.0, 1.0))
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    x = pyro.sample("x", dist.Normal(z + u, 1.0))
    m = pyro.deterministic("m", 2.0 * x)
    pyro.sample("y", dist.Normal(m + u, 1.0), obs=None if data is None else data)


def test_dependencies_include_deterministic_and_observed_sites():
    deps = model_dependencies(confounded, (torch.tensor(0.5),))
    assert deps.sites == ("u", "z", "x", "m", "y")
    assert set(deps.parents["x"]) == {"u", "z"}
    assert deps.parents["m"] == ("x",)
    assert set(deps.parents["y"]) == {"u", "m"}  # observed site keeps its parents
    assert deps.observed_in_trace == {"y"}


def test_unobserved_site_becomes_bidirected_edge():
    g = extract_graph(confounded, ["z", "x", "m", "y"])
    assert g == ADMG.from_string("z -> x -> m -> y; x <-> y")
    # the front-door estimand then follows from the program itself
    r = identify(confounded, "P(y | do(x))", observed=["z", "x", "m", "y"])
    assert r.identifiable


def test_observed_from_data_columns_and_weight_ignored():
    data = pd.DataFrame({"x": [0.0], "y": [1.0], "weight": [1.0]})
    g = extract_graph(confounded, data=data)
    assert set(g.nodes) == {"x", "y"}
    assert g.parents("y") == {"x"} and g.siblings("x") == {"y"}


def test_all_sites_observed_by_default():
    g = extract_graph(confounded)
    assert set(g.nodes) == {"u", "z", "x", "m", "y"}
    assert g.bidirected_edges == ()


def noisy():
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    n_x = pyro.sample("n_x", dist.Normal(0.0, 1.0), infer={"causalgen_noise": True})
    x = pyro.deterministic("x", z + n_x)
    n_y = pyro.sample("n_y", dist.Normal(0.0, 1.0), infer={"causalgen_noise": True})
    pyro.deterministic("y", x * n_y)


def test_noise_sites_are_not_variables():
    deps = model_dependencies(noisy)
    assert deps.noise == {"n_x", "n_y"}
    assert deps.sites == ("z", "x", "y")
    g = extract_graph(noisy)
    assert g == ADMG.from_string("z -> x -> y")
    with pytest.raises(UnknownSiteError, match="noise"):
        extract_graph(noisy, ["n_x", "x"])


def shared_noise():
    n = pyro.sample("n", dist.Normal(0.0, 1.0), infer={"causalgen_noise": True})
    x = pyro.deterministic("x", n)
    pyro.deterministic("y", x + n)


def test_shared_noise_is_projected_to_a_bidirected_edge():
    assert extract_graph(shared_noise) == ADMG.from_string("x -> y; x <-> y")


def plated(n=4):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("units", n):
        t = pyro.sample("t", dist.Bernoulli(torch.sigmoid(mu)))
        pyro.sample("o", dist.Normal(t + mu, 1.0))


def test_plates_sites_are_single_variables_and_globals_confound():
    deps = model_dependencies(plated)
    assert deps.plates["t"] == {"units"} and deps.plates["mu"] == frozenset()
    g = extract_graph(plated, ["t", "o"])
    assert g == ADMG.from_string("t -> o; t <-> o")


def test_unknown_observed_site_is_named():
    with pytest.raises(UnknownSiteError, match="'w'.*u, z, x, m, y"):
        extract_graph(confounded, ["x", "w"])


def test_extraction_leaves_rng_untouched():
    torch.manual_seed(1)
    before = torch.rand(1)
    torch.manual_seed(1)
    model_dependencies(confounded)
    assert torch.equal(torch.rand(1), before)
