"""Metrics of the causal NF benchmark on cases with a known answer.

KL: exactly zero for the truth against itself; the closed form
``KL(N(m, S) || N(m + d, S)) = d' S^-1 d / 2`` on a linear-Gaussian SCM, both per sample
(exact algebra) and as a Monte-Carlo estimate within five standard errors. ATE and
counterfactual errors: hand-computed vectors, a deliberately wrong linear model whose
error is known in closed form, and the truth against itself (exactly zero).
"""

from __future__ import annotations

import math

import pytest
import torch

from pyro_causalgen.datasets.causal_nf import GroundTruthSCM, load_scm
from pyro_causalgen.errors import ShapeError
from pyro_causalgen.metrics import (
    ate_rmse,
    average_treatment_effect,
    counterfactual_rmse,
    evaluate_ate,
    evaluate_counterfactuals,
    forward_kl,
    forward_kl_terms,
    symmetric_kl,
)


def _gaussian(scm: GroundTruthSCM) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of a linear SCM ``x = loc + A u``."""
    zero = torch.zeros(1, scm.dim, dtype=torch.float64, requires_grad=True)
    out = scm.forward(zero)
    a = torch.stack(
        [
            torch.autograd.grad(out[0, i], zero, retain_graph=True)[0][0]
            for i in range(scm.dim)
        ]
    )
    return out[0].detach(), a @ a.T


# ------------------------------------------------------------------ KL


@pytest.mark.parametrize(
    "name,variant",
    [("triangle", "non-linear"), ("large-backdoor", "non-linear"), ("fork", "linear")],
)
def test_kl_of_the_truth_against_itself_is_zero(name, variant):
    scm = load_scm(name, variant)
    x = scm.sample(500, seed=0)
    assert forward_kl(x, scm.log_prob, scm.log_prob).item() == 0.0
    assert symmetric_kl(x, x, scm.log_prob, scm.log_prob).item() == 0.0


def test_kl_against_a_shifted_gaussian_has_the_closed_form():
    scm = load_scm("chain-3", "linear")
    mean, cov = _gaussian(scm)
    shift = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64)
    q = torch.distributions.MultivariateNormal(mean + shift, cov)
    prec_shift = torch.linalg.solve(cov, shift)
    kl = 0.5 * shift @ prec_shift  # closed form
    x = scm.sample(10_000, seed=1)
    terms = forward_kl_terms(x, scm.log_prob, q.log_prob)
    # per sample: log p - log q = -d' S^-1 (x - m) + d' S^-1 d / 2, exactly
    assert torch.allclose(terms, -(x - mean) @ prec_shift + kl, atol=1e-8)
    # the estimate is within its Monte-Carlo error of the closed form
    se = math.sqrt(2 * kl.item() / len(x))  # sd of d' S^-1 (x - m) is sqrt(2 KL)
    assert abs(forward_kl(x, scm.log_prob, q.log_prob).item() - kl.item()) < 5 * se
    # both directions: KL(p || q) + KL(q || p) = 2 KL for a pure shift
    x_q = q.sample((10_000,))
    sym = symmetric_kl(x, x_q, scm.log_prob, q.log_prob).item()
    assert abs(sym - 2 * kl.item()) < 5 * math.sqrt(2) * se


def test_kl_shape_mismatch_is_reported():
    scm = load_scm("collider", "linear")
    x = scm.sample(4, seed=2)
    with pytest.raises(ShapeError, match="model log_prob"):
        forward_kl(x, scm.log_prob, lambda x: torch.zeros(3))


# ------------------------------------------------------------------ ATE / CF errors


def test_ate_and_rmse_on_hand_computed_vectors():
    x_a = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    x_b = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert torch.equal(
        average_treatment_effect(x_a, x_b), torch.tensor([2.0, 1.0, 2.0])
    )
    ate = average_treatment_effect(x_a, x_b, exclude=1)
    assert torch.equal(ate, torch.tensor([2.0, 2.0]))
    truth = torch.tensor([-1.0, 6.0])  # errors (3, -4)
    assert ate_rmse(truth, ate).item() == 5.0  # paper: Euclidean norm
    assert ate_rmse(truth, ate, "rmse").item() == pytest.approx(math.sqrt(12.5))
    with pytest.raises(ValueError, match="reduction"):
        ate_rmse(truth, ate, "max")
    with pytest.raises(ShapeError):
        average_treatment_effect(x_a, x_b[:, :2])


def test_counterfactual_rmse_on_hand_computed_rows():
    truth = torch.zeros(3, 2)
    model = torch.tensor([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]])  # unit errors 5, 0, 10
    assert counterfactual_rmse(truth, model).item() == 5.0  # paper: mean unit norm
    expected = math.sqrt((9 + 16 + 36 + 64) / 6)
    assert counterfactual_rmse(truth, model, "rmse").item() == pytest.approx(expected)
    assert counterfactual_rmse(truth, truth).item() == 0.0
    with pytest.raises(ShapeError, match="shape"):
        counterfactual_rmse(truth, model[:2])


def test_evaluate_ate_of_the_truth_is_exactly_zero():
    scm = load_scm("triangle", "non-linear")
    data = scm.sample(1000, seed=3)

    def model(n, do):  # the truth with the same noise as the reference
        return scm.sample(n, seed=4, do=do)

    res = evaluate_ate(scm, model, data, num_samples=500, true_num_samples=500, seed=4)
    assert sorted(res) == sorted(
        [f"{v}={p}" for v in ("x1", "x2") for p in ("25_50", "25_75", "50_75")]
        + ["mean"]
    )
    assert all(value == 0.0 for value in res.values())


def test_evaluate_ate_of_a_wrong_linear_model_matches_the_closed_form():
    # truth: x2 = 10 x1 - u2, x3 = 0.25 x2 + 2 u3; model: x2 = 8 x1 - u2.
    # do(x1): true ATE on (x2, x3) is (10, 2.5)(a - b), the model's (8, 2)(a - b), so
    # the paper's error is |a - b| sqrt(2^2 + 0.5^2); do(x2): both (0, 0.25)(a - b).
    scm = load_scm("chain-3", "linear")
    data = scm.sample(2000, seed=5)

    def model(n, do):
        u = torch.randn(n, 3, generator=torch.Generator().manual_seed(6)).double()
        x1 = torch.full((n,), do["x1"], dtype=torch.float64) if "x1" in do else u[:, 0]
        x2 = (
            torch.full((n,), do["x2"], dtype=torch.float64)
            if "x2" in do
            else 8 * x1 - u[:, 1]
        )
        return {"x1": x1, "x2": x2, "x3": 0.25 * x2 + 2 * u[:, 2]}

    res = evaluate_ate(scm, model, data, num_samples=1000, true_num_samples=1000)
    values = scm.intervention_values("x1", data).tolist()
    pct = dict(zip((25, 50, 75), values, strict=True))
    for p, q in [(25, 50), (25, 75), (50, 75)]:
        expected = abs(pct[p] - pct[q]) * math.sqrt(4.25)
        assert res[f"x1={p}_{q}"] == pytest.approx(expected, abs=1e-9)
        assert res[f"x2={p}_{q}"] == pytest.approx(0.0, abs=1e-9)


def test_evaluate_counterfactuals_of_truth_and_of_an_offset_model():
    scm = load_scm("simpson", "sym-prod")
    data, x = scm.sample(1000, seed=8), scm.sample(100, seed=9)
    res = evaluate_counterfactuals(scm, scm.counterfactual, x, data)
    assert sorted(res) == sorted(
        [f"{v}={p}p" for v in ("x1", "x2", "x3") for p in (25, 50, 75)] + ["mean"]
    )
    assert all(value == 0.0 for value in res.values())

    offset = torch.tensor([0.0, 3.0, 0.0, 4.0], dtype=torch.float64)
    res = evaluate_counterfactuals(
        scm, lambda xf, do: scm.counterfactual(xf, do) + offset, x, data
    )
    assert all(value == pytest.approx(5.0, abs=1e-12) for value in res.values())
    res = evaluate_counterfactuals(
        scm,
        lambda xf, do: scm.counterfactual(xf, do) + offset,
        x,
        data,
        targets=["x2"],
        reduction="rmse",
    )
    assert res["x2=50p"] == pytest.approx(math.sqrt(25 / 4))


def test_evaluate_rejects_malformed_model_output():
    scm = load_scm("collider", "linear")
    data = scm.sample(100, seed=10)
    with pytest.raises(ShapeError, match=r"\(n, 3\)"):
        evaluate_counterfactuals(scm, lambda xf, do: xf[:, :2], data, data)
