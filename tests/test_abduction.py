"""Approximate abduction of latent noise: importance sampling and SVI."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_causalgen.handlers import CounterfactualError
from pyro_causalgen.infer.abduction import abduct, max_plate_nesting
from pyro_causalgen.infer.counterfactual import counterfactual
from pyro_causalgen.testing import LinearGaussian


def confounded(n: int):
    """u latent; x = u + e_x, y = x + 2u + e_y (all N(0,1))."""
    with pyro.plate("units", n):
        u = pyro.sample("u", dist.Normal(0.0, 1.0))
        x = pyro.sample("x", dist.Normal(u, 1.0))
        return pyro.sample("y", dist.Normal(x + 2 * u, 1.0))


def test_importance_matches_the_gaussian_posterior_per_unit(device):
    """u | x, y: precision 1 + 1 + 4 = 6, mean (x + 2 (y - x)) / 6, per unit."""
    n, s = 3000, 512
    x = torch.tensor([0.0, 1.0, -1.0], device=device).repeat(n)
    y = torch.tensor([3.0, 0.0, -2.0], device=device).repeat(n)
    post = abduct(
        confounded, {"x": x, "y": y}, 3 * n, method="importance", num_particles=s
    )
    assert post.latent == ["u(u)"] and post.particles["u(u)"].shape == (s, 3 * n)
    assert post.ess is not None and float(post.ess.min()) > 50
    u = post.sample()["u(u)"].reshape(n, 3)  # one joint draw: a draw per unit
    mean = (x + 2 * (y - x))[:3] / 6
    sd = math.sqrt(1 / 6)
    assert torch.all((u.mean(0) - mean).abs() < 5 * sd / math.sqrt(n) + 3 / s)
    assert torch.all((u.std(0) - sd).abs() < 5 * sd / math.sqrt(2 * n) + 3 / s)


def test_counterfactual_with_latent_confounder_is_a_posterior_predictive():
    """do(x = a): y' = y + (a - x) exactly, whatever u; u' = u (same world noise)."""
    n = 50
    x, y = torch.randn(n), torch.randn(n)
    out = counterfactual(confounded, {"x": x, "y": y}, {"x": 2.0}, n, num_particles=64)
    assert torch.allclose(out["counterfactual"]["y"], y + 2.0 - x, atol=1e-5)
    assert torch.equal(out["counterfactual"]["u"], out["factual"]["u"])


def test_auto_uses_the_prior_when_no_observation_depends_on_latent_noise():
    d = LinearGaussian()(5)
    post = abduct(LinearGaussian(), {"x": d["x"], "y": d["y"]}, 5)
    assert post.method == "prior" and post.latent == ["u(z)"] and post.sample() == {}
    post = abduct(confounded, {"x": torch.zeros(4), "y": torch.ones(4)}, 4)
    assert post.method == "importance"


def test_a_global_latent_couples_the_units():
    """A latent outside the units plate is resampled jointly for all units."""

    def model(n: int):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("units", n):
            return pyro.sample("x", dist.Normal(g, 1.0))

    x = torch.full((20,), 2.0)
    post = abduct(model, {"x": x}, 20, method="importance", num_particles=4000)
    g = post.particles["u(g)"].reshape(-1)
    # g | x ~ N(sum x / (n + 1), 1 / (n + 1))
    mean, sd = 40 / 21, math.sqrt(1 / 21)
    se = sd / math.sqrt(float(post.ess))  # the resampled particles' effective size
    assert abs(g.mean().item() - mean) < 5 * se + 0.05
    assert max_plate_nesting(model, 3) == 1


def test_unknown_method_raises():
    with pytest.raises(CounterfactualError, match="unknown abduction method 'mcmc'"):
        abduct(confounded, {"x": torch.zeros(2)}, 2, method="mcmc")


@pytest.mark.slow
def test_svi_recovers_the_gaussian_posterior():
    n = 200
    x = torch.zeros(n)
    y = torch.full((n,), 3.0)
    post = abduct(
        confounded, {"x": x, "y": y}, n, method="svi", num_steps=1500, lr=0.05
    )
    draws = torch.stack([post.sample()["u(u)"] for _ in range(200)])
    assert abs(draws.mean().item() - 1.0) < 0.1
    assert abs(draws.std().item() - math.sqrt(1 / 6)) < 0.1
    out = counterfactual(confounded, {"x": x, "y": y}, {"x": 1.0}, n, abduction=post)
    assert torch.allclose(out["counterfactual"]["y"], y + 1.0, atol=1e-5)
