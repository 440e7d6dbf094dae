"""Causal and counterfactual queries as Python objects.

Two kinds of query exist:

* :class:`CausalQuery` -- ``P(Y | do(X), Z)``: outcomes, treatments (``do``) and
  observed conditions; each variable is free (the answer is a table over its
  values) or fixed to a value (``P(Y=1 | do(X=0))``).
* :class:`CounterfactualQuery` -- ``P(Y_{X=1}=1 | X=0)``: a conjunction of
  counterfactual events, optionally given other events; every event has a value.

Strings in the grammar of :mod:`pyro_causalgen.identify.parser` build the same
objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class Symbol:
    """A placeholder for the value of ``variable`` inside an estimand.

    An estimand's free symbols are the query's free variables; bound symbols are
    summed over.  Symbols are immutable and compare by ``(name, variable)``.

    >>> Symbol("Z'", "Z")
    Symbol(name="Z'", variable='Z')
    """

    __slots__ = ("name", "variable", "_hash")

    def __init__(self, name: str, variable: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "variable", variable)
        object.__setattr__(self, "_hash", hash((name, variable)))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Symbol is immutable")

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Symbol):
            return NotImplemented
        return self.name == other.name and self.variable == other.variable

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Symbol(name={self.name!r}, variable={self.variable!r})"

    def __str__(self) -> str:
        return self.name


def _fmt_value(v: Any) -> str:
    if isinstance(v, Symbol):
        return v.name
    if isinstance(v, str):
        return v if v.isidentifier() else repr(v)
    return str(v)


def _norm_interventions(
    values: Mapping[str, Any] | Iterable[tuple[str, Any]],
) -> tuple[tuple[str, Any], ...]:
    items = dict(values.items() if isinstance(values, Mapping) else values)
    for k in items:
        if not isinstance(k, str):
            raise TypeError(f"intervened variable names must be strings, got {k!r}")
    return tuple(sorted(items.items(), key=lambda kv: kv[0]))


@dataclass(frozen=True)
class Variable:
    """A variable, possibly counterfactual: ``Y`` or ``Y_{X=1}``.

    :param name: the variable's name (a node of the graph).
    :param interventions: values forced on other variables, as a mapping or as
        ``(name, value)`` pairs.

    >>> str(Variable("Y").do(X=1))
    'Y_{X=1}'
    """

    name: str
    interventions: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"variable names must be non-empty strings: {self.name!r}")
        object.__setattr__(
            self, "interventions", _norm_interventions(self.interventions)
        )

    def do(self, **values: Any) -> Variable:
        """This variable in the world where ``values`` are forced.

        >>> Variable("Y").do(X=1, Z=0).interventions
        (('X', 1), ('Z', 0))
        """
        return self.intervene(values)

    def intervene(self, values: Mapping[str, Any]) -> Variable:
        """Like :meth:`do` with a mapping (for names that are not identifiers).

        >>> str(Variable("Y").intervene({"X": 0}))
        'Y_{X=0}'
        """
        merged = dict(self.interventions)
        merged.update(values)
        return Variable(self.name, tuple(merged.items()))

    def equals(self, value: Any) -> Event:
        """The event that this variable takes ``value``.

        >>> str(Variable("Y").do(X=1).equals(1))
        'Y_{X=1}=1'
        """
        return Event(self, value)

    @property
    def is_counterfactual(self) -> bool:
        """Whether the variable has a subscript.

        >>> Variable("Y").is_counterfactual
        False
        """
        return bool(self.interventions)

    def __str__(self) -> str:
        if not self.interventions:
            return self.name
        sub = ", ".join(f"{k}={_fmt_value(v)}" for k, v in self.interventions)
        return f"{self.name}_{{{sub}}}"

    def to_latex(self) -> str:
        """LaTeX form.

        >>> Variable("Y").do(X=1).to_latex()
        'Y_{X=1}'
        """
        return str(self)


@dataclass(frozen=True)
class Event:
    """A (counterfactual) variable taking a value: ``Y_{X=1} = 1``.

    >>> e = Event(Variable("Y", {"X": 1}), 1)
    >>> str(e), e.variable.name
    ('Y_{X=1}=1', 'Y')
    """

    variable: Variable
    value: Any

    def __post_init__(self) -> None:
        if isinstance(self.variable, str):
            object.__setattr__(self, "variable", Variable(self.variable))

    def __str__(self) -> str:
        return f"{self.variable}={_fmt_value(self.value)}"


class Query:
    """Base class of queries: names of outcomes, treatments and conditions.

    >>> from pyro_causalgen.identify import parse_query
    >>> q = parse_query("P(Y | do(X), Z)")
    >>> q.outcomes, q.treatments, q.conditions
    (('Y',), ('X',), ('Z',))
    """

    outcomes: tuple[str, ...]
    treatments: tuple[str, ...]
    conditions: tuple[str, ...]

    @property
    def variables(self) -> tuple[str, ...]:
        """All variables named by the query, without repeats.

        >>> from pyro_causalgen.identify import parse_query
        >>> parse_query("P(Y | do(X), Z)").variables
        ('Y', 'X', 'Z')
        """
        return tuple(dict.fromkeys(self.outcomes + self.treatments + self.conditions))

    def to_latex(self) -> str:
        """LaTeX form of the query.

        >>> from pyro_causalgen.identify import parse_query
        >>> parse_query("P(Y | do(X))").to_latex()
        'P(Y \\\\mid do(X))'
        """
        return str(self).replace(" | ", " \\mid ")


def _named(
    items: Iterable[str] | Mapping[str, Any] | str, what: str
) -> tuple[tuple[str, ...], dict[str, Any]]:
    if isinstance(items, str):
        items = [items]
    if isinstance(items, Mapping):
        names = tuple(items)
        values = dict(items)
    else:
        names = tuple(items)
        values = {}
    for n in names:
        if not isinstance(n, str) or not n:
            raise TypeError(f"{what} must be variable names (strings), got {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} repeat a variable: {list(names)}")
    return names, values


class CausalQuery(Query):
    """An interventional query ``P(outcomes | do(treatments), conditions)``.

    Each argument is a list of names (free variables: the answer is a table over
    their values) or a mapping from names to values (fixed); a value of ``None``
    in a mapping also means free.

    :param outcomes: the variables whose distribution is asked for.
    :param treatments: the variables set by intervention.
    :param conditions: the variables observed (conditioned on).
    :raises ValueError: if a variable appears in two roles.

    >>> str(CausalQuery(["Y"], {"X": 1}, ["Z"]))
    'P(Y | do(X=1), Z)'
    """

    __slots__ = ("outcomes", "treatments", "conditions", "values")

    def __init__(
        self,
        outcomes: Iterable[str] | Mapping[str, Any] | str,
        treatments: Iterable[str] | Mapping[str, Any] | str = (),
        conditions: Iterable[str] | Mapping[str, Any] | str = (),
    ) -> None:
        o, ov = _named(outcomes, "outcomes")
        t, tv = _named(treatments, "treatments")
        c, cv = _named(conditions, "conditions")
        if not o:
            raise ValueError("a query needs at least one outcome")
        seen: dict[str, str] = {}
        for role, names in (("outcome", o), ("treatment", t), ("condition", c)):
            for n in names:
                if n in seen:
                    raise ValueError(
                        f"variable {n!r} is both a {seen[n]} and a {role} of the query"
                    )
                seen[n] = role
        self.outcomes: tuple[str, ...] = o
        self.treatments: tuple[str, ...] = t
        self.conditions: tuple[str, ...] = c
        vals = {**ov, **tv, **cv}
        self.values: dict[str, Any] = {k: v for k, v in vals.items() if v is not None}

    def _fmt(self, name: str) -> str:
        if name in self.values:
            return f"{name}={_fmt_value(self.values[name])}"
        return name

    def __str__(self) -> str:
        left = ", ".join(self._fmt(n) for n in self.outcomes)
        right = []
        if self.treatments:
            right.append("do(" + ", ".join(self._fmt(n) for n in self.treatments) + ")")
        right += [self._fmt(n) for n in self.conditions]
        return f"P({left} | {', '.join(right)})" if right else f"P({left})"

    def __repr__(self) -> str:
        return f"CausalQuery({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CausalQuery):
            return NotImplemented
        return (
            set(self.outcomes) == set(other.outcomes)
            and set(self.treatments) == set(other.treatments)
            and set(self.conditions) == set(other.conditions)
            and self.values == other.values
        )

    def __hash__(self) -> int:
        return hash((frozenset(self.outcomes), frozenset(self.treatments)))


class CounterfactualQuery(Query):
    """A counterfactual query ``P(events | evidence)`` (Shpitser & Pearl, 2008).

    :param events: the conjunction :math:`\\gamma` of counterfactual events.
    :param evidence: the conjunction :math:`\\delta` conditioned on (may be empty).
    :raises ValueError: if there is no event.

    >>> Y, X = Variable("Y"), Variable("X")
    >>> q = CounterfactualQuery([Y.do(X=1).equals(1)], [X.equals(0)])
    >>> str(q), q.treatments, q.outcomes, q.conditions
    ('P(Y_{X=1}=1 | X=0)', ('X',), ('Y',), ('X',))
    """

    __slots__ = ("events", "evidence")

    def __init__(self, events: Iterable[Event], evidence: Iterable[Event] = ()) -> None:
        self.events: tuple[Event, ...] = tuple(events)
        self.evidence: tuple[Event, ...] = tuple(evidence)
        if not self.events:
            raise ValueError("a counterfactual query needs at least one event")
        for e in self.events + self.evidence:
            if not isinstance(e, Event):
                raise TypeError(f"expected Event objects, got {e!r}")

    @property
    def outcomes(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys(e.variable.name for e in self.events))

    @property
    def conditions(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys(e.variable.name for e in self.evidence))

    @property
    def treatments(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(
            dict.fromkeys(
                k
                for e in self.events + self.evidence
                for k, _ in e.variable.interventions
            )
        )

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.outcomes + self.conditions + self.treatments))

    def __str__(self) -> str:
        left = ", ".join(map(str, self.events))
        if self.evidence:
            return f"P({left} | {', '.join(map(str, self.evidence))})"
        return f"P({left})"

    def __repr__(self) -> str:
        return f"CounterfactualQuery({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CounterfactualQuery):
            return NotImplemented
        return set(self.events) == set(other.events) and set(self.evidence) == set(
            other.evidence
        )

    def __hash__(self) -> int:
        return hash((frozenset(self.events), frozenset(self.evidence)))


__all__ = [
    "CausalQuery",
    "CounterfactualQuery",
    "Event",
    "Query",
    "Symbol",
    "Variable",
]
