"""The doubly robust (AIPW) answer: exact algebra, double robustness, warnings, errors.

Data: x ~ N(0, 1), t ~ Bernoulli(sigmoid(x)), y = x + 2 t + t x + N(0, 1), so
E[y | do(t=1)] - E[y | do(t=0)] = 2 + E[x] = 2 and E[y | do(t=1)] = 2. Models below get
one nuisance right and the other wrong on purpose; the AIPW estimate must stay within
5 influence-function standard errors of the truth while the plug-in of the wrong
outcome model misses it by many.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_causalgen.analysis import ask
from pyro_causalgen.analysis.doubly_robust import (
    AIPWTerm,
    Nuisances,
    PositivityWarning,
    aipw,
)
from pyro_causalgen.analysis.query import UnsupportedQueryError
from pyro_causalgen.errors import CausalModelError

ATE = "E[y | do(t=1)] - E[y | do(t=0)]"
N = 3000


def rows(n=N, seed=0, slope=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    t = (torch.rand(n, generator=g) < torch.sigmoid(slope * x)).float()
    y = x + 2 * t + t * x + torch.randn(n, generator=g)
    return {"x": x, "t": t, "y": y}


def make(propensity_slope, outcome):
    def model(n):
        with pyro.plate("units", n):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            t = pyro.sample("t", dist.Bernoulli(logits=propensity_slope * x))
            return pyro.sample("y", dist.Normal(outcome(x, t), 1.0))

    return model


def right_outcome(x, t):
    return x + 2 * t + t * x


def wrong_outcome(x, t):  # misses the interaction and doubles the slope of x
    return 2 * x + 1.0 * t


def test_aipw_algebra_matches_the_textbook_formula():
    g = torch.Generator().manual_seed(1)
    n = 50
    t = (torch.rand(n, generator=g) < 0.4).double()
    y = torch.randn(n, generator=g, dtype=torch.float64)
    e1 = 0.2 + 0.6 * torch.rand(n, generator=g, dtype=torch.float64)
    mu = torch.randn(1, 2, n, generator=g, dtype=torch.float64)
    nu = Nuisances([0.0, 1.0], torch.stack([1 - e1, e1]), mu)
    est = aipw([AIPWTerm(1.0, 1.0), AIPWTerm(-1.0, 0.0)], t, y, nu)
    psi = (
        mu[0, 1]
        - mu[0, 0]
        + t * (y - mu[0, 1]) / e1
        - (1 - t) * (y - mu[0, 0]) / (1 - e1)
    )
    assert est.estimate == pytest.approx(psi.mean().item(), abs=1e-12)
    assert est.stderr == pytest.approx(psi.std().item() / n**0.5, abs=1e-12)
    assert est.plugin == pytest.approx((mu[0, 1] - mu[0, 0]).mean().item())
    # effect on the treated: sum[t (y - mu0) - (1 - t) e/(1 - e) (y - mu0)] / sum t
    att = aipw([AIPWTerm(1.0, 1.0, 1.0), AIPWTerm(-1.0, 0.0, 1.0)], t, y, nu)
    r0 = y - mu[0, 0]
    direct = (t * r0 - (1 - t) * e1 / (1 - e1) * r0).sum() / t.sum()
    assert att.estimate == pytest.approx(direct.item(), abs=1e-12)
    lo, hi = est.interval(0.95)
    assert hi - est.estimate == pytest.approx(1.959964 * est.stderr, rel=1e-5)


@pytest.mark.parametrize(
    "slope, outcome",
    [(1.0, wrong_outcome), (0.0, right_outcome)],
    ids=["wrong outcome, right propensity", "right outcome, wrong propensity"],
)
def test_doubly_robust_with_one_nuisance_wrong(slope, outcome):
    model = make(slope, outcome)
    data = rows()
    truth_ate = 2.0 + data["x"].mean().item()  # sample mean of x: exact finite truth
    torch.manual_seed(0)
    dr = ask(model, ATE, data, method="dr", replicates=16)
    assert abs(dr.estimate - truth_ate) < 5 * dr.stderr, dr
    assert dr.method == "dr" and "influence function" in dr.interval_method
    assert dr.interval[0] < dr.estimate < dr.interval[1]
    mean1 = ask(model, "E[y | do(t=1)]", data, method="dr", replicates=16)
    assert abs(mean1.estimate - 2 * (1 + data["x"].mean().item())) < 5 * mean1.stderr
    if outcome is wrong_outcome:
        # the plug-in of E[y | do(t=1)] = 2 E[x] + 1 is off by about 1
        assert abs(mean1.plugin - 2.0) > 0.5


def test_effect_on_the_treated_with_the_true_model():
    data = rows()
    torch.manual_seed(1)
    att = ask(make(1.0, right_outcome), "E[y_{t=1} - y_{t=0} | t=1]", data, method="dr")
    truth = 2.0 + data["x"][data["t"] == 1].mean().item()
    assert abs(att.estimate - truth) < 5 * att.stderr
    assert abs(att.plugin - truth) < 5 * att.stderr


def test_positivity_warning_gives_the_numbers():
    data = rows(n=800, slope=6.0)
    with pytest.warns(
        PositivityWarning, match=r"propensities range over \[.*rows have"
    ):
        ask(make(6.0, right_outcome), ATE, data, method="dr", replicates=2)


def test_errors_name_the_problem():
    data = rows(n=100)

    def continuous(n):
        with pyro.plate("units", n):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            t = pyro.sample("t", dist.Normal(x, 1.0))
            return pyro.sample("y", dist.Normal(t, 1.0))

    with pytest.raises(CausalModelError, match="discrete treatment mechanism at 't'"):
        ask(continuous, ATE, data, method="dr")

    def latent(n):
        with pyro.plate("units", n):
            h = pyro.sample("h", dist.Normal(0.0, 1.0))
            t = pyro.sample("t", dist.Bernoulli(logits=h))
            return pyro.sample("y", dist.Normal(t + h, 1.0))

    with pytest.warns(Warning), pytest.raises(CausalModelError, match=r"\['h'\]"):
        ask(latent, ATE, {"t": data["t"], "y": data["y"]}, method="dr")
    model = make(1.0, right_outcome)
    with pytest.raises(UnsupportedQueryError, match="pass `data`"):
        ask(model, ATE, method="dr", observed=["x", "t", "y"])
    with pytest.raises(UnsupportedQueryError, match="one treatment"):
        ask(model, "E[y | do(t=1, x=0)]", data, method="dr")
    with pytest.raises(ValueError, match="unknown method"):
        ask(model, ATE, data, method="tmle")


def test_dr_answer_exports_interval_and_mc_error_to_arviz():
    data = rows(n=300)
    torch.manual_seed(0)
    ans = ask(make(1.0, right_outcome), ATE, data, method="dr", replicates=2)
    idata = ans.to_inference_data()
    attrs = idata.predictions.attrs
    assert attrs["interval"] == ans.interval_method and attrs["method"] == "dr"
    assert float(attrs["interval_lower"]) == pytest.approx(ans.interval[0])
    assert float(attrs["mc_stderr"]) == pytest.approx(ans.mc_stderr)
    assert idata.predictions["effect_influence"].shape == (1, 1, 300)
    single = ask(make(1.0, right_outcome), ATE, observed=["x", "t", "y"], n=10)
    with pytest.raises(ValueError, match="no statistical uncertainty"):
        single.to_inference_data()


def test_dr_intervals_cover_the_population_ate_at_their_level():
    """40 datasets of 1,000 rows, true nuisances but the outcome mean simulated (2
    replicates): the 90% interval covers ATE = 2 in >= 31 (P <= 0.7% if calibrated;
    MC noise in mu only widens the interval)."""
    model = make(1.0, right_outcome)
    covered = 0
    for seed in range(40):
        torch.manual_seed(seed)
        ans = ask(model, ATE, rows(n=1000, seed=100 + seed), method="dr", replicates=2)
        covered += ans.interval[0] <= 2.0 <= ans.interval[1]
    assert covered >= 31
