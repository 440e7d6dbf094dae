"""Tests for estimand expressions and their funsor evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pyro_causalgen.errors import DataError
from pyro_causalgen.identify import (
    Fraction,
    PositivityError,
    Probability,
    Product,
    Sum,
    Symbol,
    evaluate,
    identify,
)
from pyro_causalgen.identify.estimand import rename_bound
from pyro_causalgen.identify.testing import DiscreteSCM

X, Y, Z = Symbol("X", "X"), Symbol("Y", "Y"), Symbol("Z", "Z")


def test_text_and_latex():
    e = Sum(
        Product(
            [Probability([("Z", Z)]), Probability([("Y", Y)], [("X", 1), ("Z", Z)])]
        ),
        [Z],
    )
    assert e.to_text() == "Σ_{Z} P(Z) P(Y | X=1, Z)"
    assert e.to_latex() == "\\sum_{Z} P(Z) P(Y \\mid X=1, Z)"
    assert e.free_symbols == {Y}
    f = Fraction(
        Probability([("X", X), ("Y", Y)]), Sum(Probability([("X", X), ("Y", Y)]), [Y])
    )
    assert f.to_text() == "P(X, Y) / (Σ_{Y} P(X, Y))"
    assert rename_bound(f).to_text() == "P(X, Y) / (Σ_{Y'} P(X, Y'))"


def test_evaluate_matches_hand_computation_with_weights():
    data = pd.DataFrame(
        {"X": [0, 0, 1, 1], "Y": [0, 1, 0, 1], "weight": [0.1, 0.3, 0.2, 0.4]}
    )
    out = evaluate(Probability([("Y", Y)], [("X", X)]), data, [("Y", Y), ("X", X)])
    table = {(r.Y, r.X): r.probability for r in out.itertuples()}
    assert table[(1, 0)] == pytest.approx(0.75, abs=1e-12)
    assert table[(1, 1)] == pytest.approx(0.4 / 0.6, abs=1e-12)
    # raw rows give the same answer as weighted rows
    rows = pd.DataFrame(
        {"X": [0, 0, 0, 0, 1, 1, 1, 1, 1, 1], "Y": [0, 1, 1, 1, 0, 0, 1, 1, 1, 1]}
    )
    out2 = evaluate(Probability([("Y", Y)], [("X", X)]), rows, [("Y", Y), ("X", X)])
    np.testing.assert_allclose(out2["probability"], out["probability"], atol=1e-12)


def test_result_columns_follow_the_query():
    scm = DiscreteSCM("Z -> X -> Y; Z -> Y", seed=4)
    r = identify("Z -> X -> Y; Z -> Y", "P(Y | do(X), Z)")
    out = r.estimand.evaluate(scm.joint())
    assert list(out.columns) == ["Y", "X", "Z", "probability"]
    assert len(out) == 8
    sums = out.groupby(["X", "Z"])["probability"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-12)


def test_counterfactual_event_gives_one_probability():
    scm = DiscreteSCM("X -> M -> Y; X <-> Y", seed=2)
    out = identify("X -> M -> Y; X <-> Y", "P(Y_{X=1}=1 | X=0)").estimand.evaluate(
        scm.joint()
    )
    assert list(out.columns) == ["probability"] and out.shape == (1, 1)
    assert 0.0 < out["probability"][0] < 1.0


def test_string_valued_variables():
    data = pd.DataFrame({"T": ["a", "a", "b", "b"], "O": ["no", "yes", "yes", "yes"]})
    out = identify("T -> O", "P(O=yes | do(T))").estimand.evaluate(data)
    assert dict(zip(out["T"], out["probability"])) == {"a": 0.5, "b": 1.0}


def test_positivity_violation_is_named():
    data = pd.DataFrame({"Z": [0, 0, 1, 1], "X": [0, 0, 1, 1], "Y": [0, 1, 0, 1]})
    r = identify("Z -> X -> Y; Z -> Y", "P(Y | do(X))")
    with pytest.raises(
        PositivityError, match="positivity violation.*P\\(Z=.*X=.*\\) > 0"
    ):
        r.estimand.evaluate(data)
    r2 = identify("X -> Y", "P(Y | do(X=2))")
    with pytest.raises(PositivityError, match="X=2"):
        r2.estimand.evaluate(data)


def test_data_errors():
    r = identify("X -> Y", "P(Y | do(X))")
    with pytest.raises(DataError, match="no column for 'Y'"):
        r.estimand.evaluate(pd.DataFrame({"X": [0, 1]}))
    with pytest.raises(DataError, match="weight"):
        r.estimand.evaluate(pd.DataFrame({"X": [0], "Y": [1], "weight": [-1.0]}))
    with pytest.raises(DataError, match="missing"):
        r.estimand.evaluate(pd.DataFrame({"X": [0, None], "Y": [1, 1]}))
    with pytest.raises(DataError, match="DataFrame"):
        r.estimand.evaluate({"X": [0], "Y": [1]})


# ------------------------------------------- bit-mask terms (VariableTable)
def _explicit(t, om, gm, over=None):
    """The same term as a plain pair-based :class:`Probability`."""
    over = over or {}
    pairs = [(t.names[j], over.get(j, t.syms[j])) for j in range(len(t.names))]
    return Probability(
        [p for j, p in enumerate(pairs) if om >> j & 1],
        [p for j, p in enumerate(pairs) if gm >> j & 1],
    )


def test_masked_probability_matches_explicit_terms():
    import random

    from pyro_causalgen.identify.estimand import VariableTable

    rng = random.Random(0)
    t = VariableTable([f"V{i}" for i in range(300)])
    for _ in range(60):
        om = 1 << rng.randrange(300)
        gm = rng.getrandbits(300) & ~om & rng.getrandbits(300)
        over = {}
        for j in rng.sample(range(300), 3):
            over[j] = rng.choice([0, 1, "a b", Symbol(f"V{j}'", f"V{j}")])
        for o in (None, over):
            m = Probability.from_masks(t, om, gm, o)
            e = _explicit(t, om, gm, o)
            assert m.to_text() == e.to_text()
            assert m.to_latex() == e.to_latex()
            assert m.outcomes == e.outcomes and m.given == e.given
            assert m.free_symbols == e.free_symbols
            mapping = {t.syms[j]: Symbol(f"V{j}''", f"V{j}") for j in over}
            mapping.update({s: 1 for s in rng.sample(list(t.syms), 5)})
            for s in list(e.free_symbols)[:2]:
                mapping[s] = 0
            assert m.substitute(mapping).to_text() == e.substitute(mapping).to_text()
            assert (
                m.substitute(mapping).free_symbols == e.substitute(mapping).free_symbols
            )


def test_masked_terms_in_trees_rename_like_explicit_terms():
    from pyro_causalgen.identify.estimand import VariableTable

    t = VariableTable(["X", "M", "Y"] + [f"W{i}" for i in range(100)])
    x, m, y = t.syms[:3]
    big = (1 << 103) - 1

    def tree(make):
        inner = Sum(
            Product([make(0b001), make(0b100, 0b011), make(1 << 70, big & ~(1 << 70))]),
            [x],
        )
        return Product([make(0b010, 0b001), inner, Fraction(make(0b100), make(0b001))])

    masked = tree(lambda o, g=0: Probability.from_masks(t, o, g))
    plain = tree(lambda o, g=0: _explicit(t, o, g))
    assert masked.free_symbols == plain.free_symbols
    assert rename_bound(masked).to_text() == rename_bound(plain).to_text()
    assert "Σ_{X'}" in rename_bound(masked).to_text()
    fixed = {x: 1, y: 0}
    assert masked.substitute(fixed).to_text() == plain.substitute(fixed).to_text()
    assert masked.substitute({Symbol("Q", "Q"): 1}) is masked
