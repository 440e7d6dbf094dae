"""Tests for the query language: objects, parser, errors."""

from __future__ import annotations

import pytest

from pyro_causalgen.identify import (
    CausalQuery,
    CounterfactualQuery,
    Event,
    QuerySyntaxError,
    UnknownVariableError,
    Variable,
    identify,
    parse_query,
)


@pytest.mark.parametrize(
    "text",
    [
        "P(Y | do(X))",
        "P(Y1, Y2 | do(X1, X2), Z)",
        "P(Y=1 | do(X=0))",
        "P(Y | Z)",
        "P(Y)",
        "P(Y_{X=1}=1 | X=0)",
        "P(Y_{X=1}=1, Y_{X=0}=0)",
        "P(Y_{X=1, Z=0}=1 | X=0, Z_{X=1}=1)",
    ],
)
def test_round_trip(text):
    q = parse_query(text)
    assert str(q) == text
    assert parse_query(str(q)) == q


def test_causal_query_roles():
    q = parse_query("P(Y1, Y2 | do(X1, X2), Z)")
    assert isinstance(q, CausalQuery)
    assert q.outcomes == ("Y1", "Y2")
    assert q.treatments == ("X1", "X2")
    assert q.conditions == ("Z",)
    assert q == CausalQuery(["Y1", "Y2"], ["X1", "X2"], ["Z"])


def test_counterfactual_query_objects_match_strings():
    Y, X = Variable("Y"), Variable("X")
    built = CounterfactualQuery([Y.do(X=1).equals(1)], [X.equals(0)])
    assert built == parse_query("P(Y_{X=1}=1 | X=0)")
    assert built.outcomes == ("Y",) and built.treatments == ("X",)
    assert built.conditions == ("X",)
    pns = parse_query("P(Y_{X=1}=1, Y_{X=0}=0)")
    assert pns == CounterfactualQuery(
        [Event(Variable("Y", {"X": 1}), 1), Event(Variable("Y", {"X": 0}), 0)]
    )


def test_values_parse_to_python_types():
    q = parse_query("P(Y_{X=1.5}=high | Z='a b', W=True)")
    (e,) = q.events
    assert e.variable.interventions == (("X", 1.5),) and e.value == "high"
    assert [ev.value for ev in q.evidence] == ["a b", True]


def test_names_with_underscores_and_subscripts():
    q = parse_query("P(my_y_{my_x=1}=0)")
    (e,) = q.events
    assert e.variable.name == "my_y" and e.variable.interventions == (("my_x", 1),)


@pytest.mark.parametrize(
    "text, match",
    [
        ("P(Y | do(X)", "expected '\\)' at end of input"),
        ("Q(Y)", "starts with 'P\\('"),
        ("P()", "expected a variable name"),
        ("P(Y | do(X)) extra", "unexpected 'extra'"),
        ("P(Y_{X=1} | X=0)", "needs a value"),
        ("P(Y_{X}=1)", "subscript of 'Y' needs a value for 'X'"),
        ("P(Y_{X=1}=1 | do(Z))", "cannot be mixed"),
        ("P(Y | do(Y))", "both a outcome and a treatment"),
        ("P(Y $ X)", "unexpected character '\\$'"),
        ("P(Y_{X=1, X=2}=1)", "sets 'X' twice"),
    ],
)
def test_malformed_queries_name_the_problem(text, match):
    with pytest.raises(QuerySyntaxError, match=match):
        parse_query(text)


def test_unknown_variables_are_named():
    with pytest.raises(UnknownVariableError, match="'W'"):
        identify("X -> Y", "P(Y | do(W))")
    with pytest.raises(UnknownVariableError, match="'Q'"):
        identify("X -> Y", "P(Y_{Q=1}=1)")


def test_latex():
    assert parse_query("P(Y | do(X), Z)").to_latex() == "P(Y \\mid do(X), Z)"
