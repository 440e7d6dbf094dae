"""``ask``: every kind of question answered against its closed form, the guard, errors.

The heterogeneous SCM used throughout (all sites observed)::

    z ~ N(0, 1),   x = z + u_x,   y = x (1 + z) + z + 0.5 u_y,   u ~ N(0, 1)

has E[y | do(x=a)] = a, unit effects y_{x=1} - y_{x=0} = 1 + z (ATE 1),
E[y | do(x=a), z=c] = a (1 + c) + c, and, since z | x ~ N(x / 2, 1 / 2),
E[y_{x=1} - y_{x=0} | x=1] = 1.5 (ETT) and E[y_{x=1} | x=0] = 1. Monte Carlo checks
allow 5 standard errors of the per-unit spread over ``n`` units.
"""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from test_analysis import linear_scm  # x ~ N(0, 1), y = slope x + N(0, 1)

from pyro_causalgen import (
    NonIdentifiableWarning,
    Unidentifiable,
    ask,
)
from pyro_causalgen.analysis import (
    Ensemble,
    UnsupportedQueryError,
    average_treatment_effect,
    effect_of_treatment_on_the_treated,
    parse_question,
)
from pyro_causalgen.errors import DataError, UnknownSiteError
from pyro_causalgen.identify import CounterfactualWitness, Hedge, QuerySyntaxError

OBSERVED = ["z", "x", "y"]


def hetero(n):
    with pyro.plate("units", n):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        x = pyro.sample("x", dist.Normal(z, 1.0))
        return pyro.sample("y", dist.Normal(x * (1 + z) + z, 0.5))


def confounded(n):
    """h latent: x <- h -> y, so P(y | do(x)) is not identifiable from (x, y)."""
    with pyro.plate("units", n):
        h = pyro.sample("h", dist.Normal(0.0, 1.0))
        x = pyro.sample("x", dist.Normal(h, 1.0))
        return pyro.sample("y", dist.Normal(x + h, 1.0))


def within(answer, truth, sd, n):
    assert abs(answer.estimate - truth) < 5 * sd / math.sqrt(n), answer


def test_interventional_mean_on_a_linear_gaussian_scm():
    n = 20_000
    ans = ask(linear_scm(), "E[y | do(x=1.5)]", n=n)  # observed: scm.variables
    within(ans, 3.0, 1.0, n)
    assert ans.mc_stderr == pytest.approx(1 / math.sqrt(n), rel=0.05)
    assert ans.stderr is None and "no statistical interval" in str(ans)
    assert ans.identifiable and ans.estimand == "P(y | do(x=1.5)) = P(y | x=1.5)"
    assert ans.units.shape == (n,) and ans.interval is None and ans.draws is None
    # P(...) with a free outcome asks for the same mean
    within(ask(linear_scm(), "P(y | do(x=-1))", n=n), -2.0, 1.0, n)


def test_interventional_mean_and_probability_on_a_heterogeneous_scm():
    n = 4000
    within(ask(hetero, "E[y | do(x=2)]", observed=OBSERVED, n=n), 2.0, 3.04, n)
    # P(y=v) is the probability of the event: zero for a continuous outcome
    assert ask(hetero, "P(y=0 | do(x=1))", observed=OBSERVED, n=50).estimate == 0.0

    def coin(n):
        with pyro.plate("units", n):
            t = pyro.sample("t", dist.Bernoulli(0.3))
            return pyro.sample("y", dist.Bernoulli(0.2 + 0.5 * t))

    p = ask(coin, "P(y=1 | do(t=1))", observed=["t", "y"], n=n)
    within(p, 0.7, math.sqrt(0.7 * 0.3), n)


def test_ate_uses_common_noise_and_equals_average_treatment_effect():
    n = 4000
    ans = ask(hetero, "E[y | do(x=1)] - E[y | do(x=0)]", observed=OBSERVED, n=n)
    within(ans, 1.0, 1.0, n)  # unit effects 1 + z: spread 1
    assert ans.mc_stderr == pytest.approx(1 / math.sqrt(n), rel=0.1)
    assert [str(r.query) for r in ans.identification] == [
        "P(y | do(x=1))",
        "P(y | do(x=0))",
    ]
    torch.manual_seed(3)
    again = ask(hetero, "E[y_{x=1} - y_{x=0}]", observed=OBSERVED, n=500)
    torch.manual_seed(3)
    direct = average_treatment_effect(hetero, "y", "x", 1.0, 0.0, n=500)
    assert again.estimate == pytest.approx(direct.value, rel=1e-6)  # float32 sums
    # a linear SCM has the same effect on every unit
    exact = ask(linear_scm(), "E[y | do(x=1)] - E[y | do(x=-1)]", n=100)
    assert exact.estimate == pytest.approx(4.0, abs=1e-9) and exact.mc_stderr < 1e-9


def test_conditional_effect_given_a_covariate_value():
    n = 2000
    ans = ask(
        hetero,
        "E[y | do(x=1), z=0.5] - E[y | do(x=0), z=0.5]",
        observed=OBSERVED,
        n=n,
    )
    # every unit has z = 0.5, so every unit effect is exactly 1 + 0.5
    assert ans.estimate == pytest.approx(1.5, abs=1e-5) and ans.mc_stderr < 1e-5
    assert "P(y | z=0.5, x=1)" in ans.estimand  # IDC: back-door through z
    arm = ask(hetero, "E[y | do(x=2), z=0.5]", observed=OBSERVED, n=n)
    within(arm, 2 * 1.5 + 0.5, 0.5, n)


def test_effect_of_treatment_on_the_treated_by_abduction():
    n = 2000
    ett = ask(hetero, "E[y_{x=1} - y_{x=0} | x=1]", observed=OBSERVED, n=n)
    within(ett, 1.5, math.sqrt(0.5), n)  # 1 + z, z | x=1 ~ N(1/2, 1/2)
    assert ett.identification[0].algorithm == "IDC*"
    cf = ask(hetero, "P(y_{x=1} | x=0)", observed=OBSERVED, n=n)
    within(cf, 1.0, 1.5, n)  # 1 + 2 z + 0.5 u_y, z | x=0 ~ N(0, 1/2)
    # consistency: y_{x=1} = y for units with x = 1
    same = ask(hetero, "E[y_{x=1} - y | x=1]", observed=OBSERVED, n=200)
    assert same.estimate == 0.0 and same.mc_stderr == 0.0


def observed_rows():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, generator=g)
    x = torch.where(torch.rand(200, generator=g) < 0.5, 1.0, 0.0)
    y = x * (1 + z) + z + 0.5 * torch.randn(200, generator=g)
    return {"z": z, "x": x, "y": y}


def test_unit_level_answers_for_observed_rows_are_exact():
    rows = observed_rows()
    z, x, y = rows["z"], rows["x"], rows["y"]
    cf = ask(hetero, "E[y_{x=1}]", rows)
    assert torch.allclose(cf.units.float(), y + (1 - x) * (1 + z), atol=1e-5)
    assert torch.equal(cf.rows, torch.arange(200))
    ett = ask(hetero, "E[y_{x=1} - y_{x=0} | x=1]", rows)
    treated = (x == 1).nonzero().squeeze(-1)
    assert torch.equal(ett.rows, treated)
    assert ett.estimate == pytest.approx((1 + z[treated]).mean().item(), abs=1e-5)
    direct = effect_of_treatment_on_the_treated(hetero, rows, "y", "x", 1.0, 0.0, 200)
    assert ett.estimate == pytest.approx(direct.value, rel=1e-6)
    old = z > 1.0
    cate = ask(hetero, "E[y | do(x=1)] - E[y | do(x=0)]", rows, where=old)
    assert cate.estimate == pytest.approx((1 + z[old]).mean().item(), abs=1e-5)
    # a condition without a value is each unit's own value: unit-level, which the
    # graph cannot identify (y_{x=1} and y share the unit's noise)
    with pytest.warns(NonIdentifiableWarning):
        unit = ask(hetero, "E[y_{x=1} | x, y]", rows)
    assert not unit.identifiable and isinstance(unit.witness, CounterfactualWitness)
    assert torch.allclose(unit.units, cf.units)


def test_members_give_percentile_intervals_and_t_only_when_asked():
    models = [linear_scm(s) for s in (1.9, 2.0, 2.1)]
    q = "E[y | do(x=1)] - E[y | do(x=0)]"
    ans = ask(models, q, n=50)
    assert ans.draws.draws.tolist() == pytest.approx([1.9, 2.0, 2.1], abs=1e-9)
    # percentiles 5% and 95% of (1.9, 2.0, 2.1), linear interpolation
    assert ans.interval == pytest.approx((1.91, 2.09), abs=1e-6)
    assert ans.interval_method == "90% interval, percentiles of 3 ensemble members"
    assert ans.stderr == pytest.approx(0.1) and ans.mc_stderr < 1e-12  # linear: exact
    text = str(ans)
    assert "percentiles of 3 ensemble members: [1.91, 2.09]" in text
    assert "Monte Carlo s.e." in text and "(s.e." not in text
    t = ask(models, q, n=50, interval="t")
    # t quantile with 2 dof at 0.95 is 2.919986; sd of the draws is 0.1
    assert t.interval == pytest.approx((2 - 0.2919986, 2 + 0.2919986), abs=1e-6)
    assert "Student t" in t.interval_method
    assert ans.units is None and ans.prob == 0.9
    boot = ask(Ensemble(models, "bootstrap"), q, n=5)
    assert boot.draws.method == "bootstrap"
    assert boot.interval == pytest.approx(ans.interval, abs=1e-9)
    attrs = boot.draws.to_inference_data().posterior.attrs
    assert attrs["identifiable"] == "True" and "P(y | x=1)" in attrs["estimand"]


def test_bayesian_members_use_equal_tailed_quantiles():
    from pyro_causalgen.analysis.bayesian import fit_bayesian

    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, generator=g, dtype=torch.float64)
    data = {"x": x, "y": 2 * x + torch.randn(200, generator=g, dtype=torch.float64)}
    bayes, _ = fit_bayesian(linear_scm(), data, steps=30, seed=0)
    ans = ask(bayes, "E[y | do(x=1)] - E[y | do(x=0)]", n=10, draws=41, prob=0.8)
    draws = ans.draws.draws.sort().values
    assert ans.draws.method == "bayesian" and len(draws) == 41
    # with 41 draws the 10% and 90% quantiles are exactly the 5th and 37th draws
    assert ans.interval == pytest.approx((draws[4].item(), draws[36].item()))


def test_non_identifiable_query_reports_the_hedge_and_strict_raises():
    with pytest.warns(NonIdentifiableWarning, match="hedge"):
        ans = ask(confounded, "E[y | do(x=1)]", observed=["x", "y"], n=4000)
    assert not ans.identifiable and ans.estimand is None
    assert isinstance(ans.witness, Hedge) and "not identifiable" in str(ans)
    within(ans, 1.0, math.sqrt(2.0), 4000)  # the model still answers: 1 + E[h]
    with pytest.raises(Unidentifiable, match="hedge"):
        ask(confounded, "E[y | do(x=1)]", observed=["x", "y"], strict=True)
    with pytest.warns(NonIdentifiableWarning):
        ett = ask(confounded, "E[y_{x=1} - y_{x=0} | x=0]", observed=["x", "y"], n=50)
    assert isinstance(ett.witness, CounterfactualWitness)
    # observing the confounder identifies it (back-door), without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ask(confounded, "E[y | do(x=1)]", observed=["h", "x", "y"], n=10)


@pytest.mark.parametrize(
    "query,error,match",
    [
        ("E[w | do(x=1)]", UnknownSiteError, "'w', which is not a site"),
        ("P(y | do(x))", UnsupportedQueryError, "treatment 'x' has no value"),
        ("P(y, z | do(x=1))", UnsupportedQueryError, "one at a time"),
        ("P(y_{x=1}=1, y_{x=0}=0)", UnsupportedQueryError, "joint of 2 events"),
        ("E[y] - E[z] - E[x]", UnsupportedQueryError, "difference of two"),
        ("E[y | do(x=1), z]", UnsupportedQueryError, "condition 'z' has no value"),
        ("E[y | do(z=1), x=0]", UnsupportedQueryError, "affected by the treatment"),
        ("E[y | do(x=a)]", UnsupportedQueryError, "must be a number"),
        ("E[y_{x=1} | z_{x=0}=1]", UnsupportedQueryError, "evidence must be factual"),
        (
            "E[y | do(x=1), z=0] - E[y | do(x=0), z=1]",
            UnsupportedQueryError,
            "same conditions",
        ),
        ("E[y | do(x=1)", QuerySyntaxError, "never closed"),
        ("P(y | do(x=1)", QuerySyntaxError, "expected"),
    ],
)
def test_bad_questions_name_the_problem(query, error, match):
    with pytest.raises(error, match=match):
        ask(hetero, query, observed=OBSERVED, n=5)


def test_bad_arguments_name_the_problem():
    with pytest.raises(UnsupportedQueryError, match="observed="):
        ask(hetero, "E[y | do(x=1)]", n=5)
    with pytest.raises(UnsupportedQueryError, match=r"\['h'\], not observed"):
        ask(confounded, "E[y | do(h=1)]", observed=["x", "y"], n=5)
    with pytest.raises(UnsupportedQueryError, match="pass `data`"):
        ask(hetero, "E[y | do(x=1)]", observed=OBSERVED, where=torch.ones(3) > 0)
    with pytest.raises(DataError, match="no data row satisfies"):
        ask(hetero, "E[y_{x=1} | x=2]", observed_rows())
    nan_rows = {k: v.clone() for k, v in observed_rows().items()}
    nan_rows["y"][0] = float("nan")
    with pytest.raises(DataError, match="column 'y' has NaN"):
        ask(hetero, "E[y_{x=1} - y]", nan_rows)
    assert [t.sign for t in parse_question("E[y | do(x=-1)] - E[y | do(x=1)]")] == [
        1.0,
        -1.0,
    ]
