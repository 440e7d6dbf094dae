"""Tests for pyro_causalgen.identify.guard."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest

from pyro_causalgen.identify import NonIdentifiableWarning, Unidentifiable
from pyro_causalgen.identify.guard import check_identifiable


def test_identifiable_query_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = check_identifiable("Z -> X -> Y; Z -> Y", "P(Y | do(X))")
    assert r.identifiable


def test_warns_naming_the_hedge():
    with pytest.warns(NonIdentifiableWarning, match="F = \\{X, Y\\} and F' = \\{Y\\}"):
        r = check_identifiable("X -> Y; X <-> Y", "P(Y | do(X))")
    assert not r.identifiable
    assert issubclass(NonIdentifiableWarning, UserWarning)


def test_strict_raises_with_witness():
    with pytest.raises(Unidentifiable, match="ID\\* line 8") as info:
        check_identifiable("X -> Y", "P(Y_{X=1}=1, Y_{X=0}=0)", strict=True)
    assert info.value.witness.reason == "conflict"


def latent_model():
    u = pyro.sample("u", dist.Normal(0.0, 1.0))
    x = pyro.sample("x", dist.Normal(u, 1.0))
    pyro.sample("y", dist.Normal(x + u, 1.0))


def test_guard_on_a_pyro_program():
    with pytest.warns(NonIdentifiableWarning, match="hedge"):
        check_identifiable(latent_model, "P(y | do(x))", observed=["x", "y"])
    r = check_identifiable(latent_model, "P(y | do(x))")  # u observed: fine
    assert r.identifiable
