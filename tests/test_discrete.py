"""Discrete mechanisms with Gumbel-max noise: posterior draws, counterfactuals, fit."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pyro_causalgen import fit
from pyro_causalgen.handlers.noise import noise_form, truncated_gumbel_posterior
from pyro_causalgen.infer.counterfactual import counterfactual
from pyro_causalgen.mechanisms.discrete import BernoulliMechanism, CategoricalMechanism


def test_truncated_gumbel_posterior_is_consistent_and_exact(device):
    """Draws reproduce the category; their law matches rejection sampling."""
    n = 40_000
    logits = torch.tensor([0.5, -1.0, 1.0], device=device)
    k = torch.full((n,), 1, device=device)
    g, lp = truncated_gumbel_posterior(logits.expand(n, 3), k)
    assert torch.equal((logits + g).argmax(-1), k)
    assert torch.allclose(lp, torch.log_softmax(logits, -1)[1].expand(n))
    # reference: prior Gumbel draws kept when argmax == 1
    prior = dist.Gumbel(torch.zeros(400_000, 3, device=device), 1.0).sample()
    kept = prior[(logits + prior).argmax(-1) == 1]
    for j in range(3):
        se = math.sqrt(g[:, j].var() / n + kept[:, j].var() / len(kept))
        assert abs(g[:, j].mean() - kept[:, j].mean()) < 5 * se, j


def test_bernoulli_counterfactual_probability_has_the_monotone_closed_form():
    """With x = 1[v < p]: P(x' = 1 | x = 1) = min(p', p) / p."""
    n = 20_000

    def model(n: int, shift: float = 0.0):
        with pyro.plate("units", n):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            return pyro.sample("t", dist.Bernoulli(logits=a))

    a = torch.full((n,), 0.3)
    t = torch.ones(n)
    for a_cf in (-0.5, 1.0):
        out = counterfactual(model, {"a": a, "t": t}, {"a": a_cf}, n)
        p, p_cf = torch.sigmoid(torch.tensor(0.3)), torch.sigmoid(torch.tensor(a_cf))
        expected = float(torch.minimum(p, p_cf) / p)
        got = out["counterfactual"]["t"].mean().item()
        se = math.sqrt(max(expected * (1 - expected), 1e-4) / n)
        assert abs(got - expected) < 5 * se + 1e-9, (a_cf, got, expected)


def test_categorical_counterfactual_stability():
    """Oberst & Sontag: if only the observed category's logit goes up, it stays."""
    n = 5000

    def model(n: int):
        with pyro.plate("units", n):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            logits = torch.stack([a, torch.zeros_like(a), -a], -1)
            return pyro.sample("k", dist.Categorical(logits=logits))

    a = torch.full((n,), 0.5)
    k = torch.zeros(n, dtype=torch.long)
    out = counterfactual(model, {"a": a, "k": k}, {"a": 2.0}, n)
    assert out["counterfactual"]["k"].dtype == torch.long
    assert torch.all(out["counterfactual"]["k"] == 0)
    # no change in the logits: no change in the category
    out = counterfactual(model, {"a": a, "k": torch.ones(n, dtype=torch.long)}, {}, n)
    assert torch.equal(out["counterfactual"]["k"], out["factual"]["k"])


class DiscreteSCM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.t = BernoulliMechanism(parents=["a"], name="t")
        self.k = CategoricalMechanism(
            3, parents=["a", "t"], hidden_features=(8,), name="k"
        )

    def forward(self, n: int) -> dict:
        with pyro.plate("units", n):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            t = pyro.sample("t", self.t(a))
            k = pyro.sample("k", self.k(a, t))
        return {"a": a, "t": t, "k": k}


def test_discrete_mechanisms_fit_and_have_noise_forms():
    n = 2000
    a = torch.randn(n)
    t = torch.bernoulli(torch.sigmoid(2 * a))
    k = torch.where(t > 0, 2, (a > 0).long())
    scm = DiscreteSCM()
    data = {"a": a, "t": t, "k": k}
    hist = fit(scm, data, epochs=8, lr=0.05, seed=0, batch_size=250, patience=None)
    assert hist.val_loss[-1] < hist.val_loss[0]
    w = scm.t.net[0].weight.item() / scm.t.context_scale.item()
    assert 1.2 < w < 2.8, w  # true logit slope 2
    assert noise_form(scm.k(a, t), "k").noise_event_shape == (3,)
    out = counterfactual(scm, {"a": a[:5], "t": t[:5], "k": k[:5]}, {"t": 1.0}, 5)
    assert torch.equal(out["factual"]["k"], k[:5])
    tr = poutine.trace(scm).get_trace(4)
    assert tr.nodes["k"]["fn"].support.is_discrete


def test_bad_discrete_observation_raises():
    def model():
        pyro.sample("k", dist.Categorical(logits=torch.zeros(3)))

    with pytest.raises(Exception, match="discrete site 'k' is not integer"):
        counterfactual(model, {"k": torch.tensor(0.5)}, {})
