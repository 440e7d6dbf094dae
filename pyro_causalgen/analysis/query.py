"""One entry point for causal questions: :func:`ask` a model a query string.

A question is one expectation, probability, or the difference of two::

    E[y | do(x=1)]                        interventional mean
    P(y=1 | do(x=1))                      interventional probability (discrete y)
    E[y | do(x=1)] - E[y | do(x=0)]       average treatment effect
    E[y | do(x=1), z=0.5] - E[y | do(x=0), z=0.5]     conditional effect at z = 0.5
    E[y_{x=1} - y_{x=0} | x=1]            effect of treatment on the treated
    P(y_{x=1} | x=0)                      a counterfactual mean (no value needed)

Inside ``E[...]`` and ``P(...)`` the grammar is that of
:func:`~pyro_causalgen.identify.parse_query`. Every term of the question is first
checked for identifiability on the model's graph over the observed variables
(:func:`~pyro_causalgen.identify.check_identifiable`), then answered by simulation:
without conditions by ``n`` simulated units under each term's intervention, with
common noise across terms (:func:`~pyro_causalgen.analysis.paired_simulations`);
with conditions, or for given ``data`` rows, unit by unit in a multi-world
counterfactual that shares each unit's abducted noise across the terms
(:func:`~pyro_causalgen.infer.counterfactual`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pyro_causalgen.analysis.bayesian import BayesianModel
from pyro_causalgen.analysis.doubly_robust import (
    AIPWTerm,
    DoublyRobustEstimate,
    adjustment_sites,
    aipw,
    estimate_nuisances,
)
from pyro_causalgen.analysis.effects import MonteCarloEstimate, _mean_and_se
from pyro_causalgen.analysis.simulate import paired_simulations, site_values
from pyro_causalgen.analysis.uncertainty import (
    EffectDraws,
    Ensemble,
    effect_over_members,
)
from pyro_causalgen.errors import CausalModelError, DataError, UnknownSiteError
from pyro_causalgen.graph import ADMG, extract_graph
from pyro_causalgen.identify import (
    CausalQuery,
    CounterfactualQuery,
    Event,
    IdentificationResult,
    Query,
    QuerySyntaxError,
    Symbol,
    Variable,
    as_graph,
    check_identifiable,
    parse_query,
)
from pyro_causalgen.infer.counterfactual import counterfactual


class UnsupportedQueryError(CausalModelError):
    """A well-formed query that :func:`ask` cannot answer; the message says why.

    >>> try:
    ...     parse_question("P(y | do(x))")
    ... except UnsupportedQueryError as e:
    ...     print(e)
    'P(y | do(x))': treatment 'x' has no value; write do(x=1)
    """


@dataclass(frozen=True)
class _Term:
    """``sign * E[f(outcome) in the world do(interventions) | evidence]``."""

    sign: float
    outcome: str
    value: Any  # None: the mean of the outcome; else P(outcome == value)
    interventions: dict[str, float]
    evidence: dict[str, Any]  # name -> value, or None: each unit's observed value
    query: Query  # the term as identification checks it


@dataclass
class QueryAnswer:
    """The answer of :func:`ask`: an estimate, its statistical interval and, apart,
    the Monte Carlo error of the simulation that computed it.

    :ivar query: the question as asked.
    :ivar estimate: the answer (the mean over members when there are several; the
        doubly robust estimate with ``method="dr"``).
    :ivar mc_stderr: Monte Carlo standard error of :attr:`estimate`: how far more
        simulation could move it. It says nothing about how well the data determine
        the answer.
    :ivar identification: one result per distinct term, with its estimand or the
        hedge / counterfactual witness that proves it is not identifiable.
    :ivar units: one model's per-unit values of the quantity, ``(units,)`` (simulated
        units, or the selected ``data`` rows); ``None`` with members.
    :ivar rows: indices of the ``data`` rows in ``units``; ``None`` without data.
    :ivar draws: the answer of every member or posterior draw; else ``None``.
    :ivar interval: the statistical ``prob`` interval (over members or posterior
        draws, or from the influence function with ``method="dr"``); ``None`` for a
        single fitted model, which carries no statistical uncertainty.
    :ivar interval_method: what :attr:`interval` is, in words.
    :ivar stderr: statistical standard error (spread of the draws, or the influence
        function's), ``None`` with a single model.
    :ivar method: ``"plugin"`` (simulation from the model) or ``"dr"``.
    :ivar plugin: with ``method="dr"``, the plug-in estimate it corrects.
    :ivar doubly_robust: with ``method="dr"``, the full
        :class:`~pyro_causalgen.analysis.doubly_robust.DoublyRobustEstimate`.

    >>> def model(n):
    ...     with pyro.plate("units", n):
    ...         pyro.sample("y", dist.Normal(pyro.sample("x", dist.Normal(0, 1)), 1))
    >>> ans = ask(model, "P(y | do(x=1))", observed=["x", "y"], n=10)
    >>> ans.units.shape, ans.identifiable, ans.witness, ans.interval
    (torch.Size([10]), True, None, None)
    """

    query: str
    estimate: float
    mc_stderr: float
    identification: tuple[IdentificationResult, ...]
    units: Tensor | None = None
    rows: Tensor | None = None
    draws: EffectDraws | None = None
    interval: tuple[float, float] | None = None
    prob: float | None = None
    interval_method: str | None = None
    stderr: float | None = None
    method: str = "plugin"
    plugin: float | None = None
    doubly_robust: DoublyRobustEstimate | None = None

    @property
    def summary(self) -> dict[str, Any]:
        """The answer as plain values, every number labelled (for ``--json``)."""
        lo, hi = self.interval if self.interval is not None else (None, None)
        return {
            "query": self.query,
            "estimate": self.estimate,
            "method": self.method,
            "interval_lower": lo,
            "interval_upper": hi,
            "interval_level": self.prob if self.interval is not None else None,
            "interval_method": self.interval_method,
            "stderr": self.stderr,
            "mc_stderr": self.mc_stderr,
            "plugin": self.plugin,
            "identifiable": self.identifiable,
            "estimand": self.estimand,
        }

    @property
    def identifiable(self) -> bool:
        """Whether every term of the question is identifiable."""
        return all(r.identifiable for r in self.identification)

    @property
    def estimand(self) -> str | None:
        """The estimands as text (``;``-separated per term), if identifiable."""
        if not self.identifiable:
            return None
        return "; ".join(
            f"{r.query} = {r.estimand.to_text()}"  # type: ignore[union-attr]
            for r in self.identification
        )

    @property
    def witness(self) -> Any:
        """The hedge or counterfactual witness of the first unidentifiable term."""
        return next((r.witness for r in self.identification if r.witness), None)

    @property
    def explanation(self) -> str:
        """Why each term is (or is not) identifiable, one line per term."""
        return "\n".join(r.explanation for r in self.identification)

    def __str__(self) -> str:
        return f"{self.query} = {self.describe()}\n{self.verdict()}"

    def to_inference_data(self, name: str = "effect") -> Any:
        """ArviZ data with the interval and the Monte Carlo error as labelled attrs.

        With members or posterior draws, their answers are the ``posterior`` draws
        (:meth:`EffectDraws.to_inference_data`); with ``method="dr"``, each row's
        influence-function value is ``{name}_influence`` in ``predictions`` (dim
        ``unit``). Raises ``ValueError`` for a single model's plug-in answer, which
        has no statistical uncertainty to export.

        >>> def model(n):
        ...     with pyro.plate("units", n):
        ...         x = pyro.sample("x", dist.Normal(0, 1))
        ...         pyro.sample("y", dist.Normal(x, 1))
        >>> ans = ask([model, model], "E[y | do(x=1)]", observed=["x", "y"], n=10)
        >>> ans.to_inference_data().posterior.attrs["interval"]
        '90% interval, percentiles of 2 ensemble members'
        """
        if self.draws is not None:
            return self.draws.to_inference_data(name, prob=self.prob or 0.9)
        if self.doubly_robust is None or self.interval is None:
            raise ValueError(
                "a single model's plug-in answer has no statistical uncertainty to "
                "export: ask an ensemble, a BayesianModel, or method='dr'"
            )
        from pyro_causalgen.export import to_inference_data

        lo, hi = self.interval
        attrs = {
            "query": self.query,
            "method": "dr",
            "estimate": self.estimate,
            "interval": self.interval_method,
            "interval_lower": lo,
            "interval_upper": hi,
            "stderr": self.stderr,
            "mc_stderr": self.mc_stderr,
            "plugin": self.plugin,
        }
        influence = self.doubly_robust.influence.reshape(1, 1, -1)
        return to_inference_data(
            {"predictions": {f"{name}_influence": influence}},
            dims={f"{name}_influence": ["unit"]},
            attrs=attrs,
        )

    def describe(self, digits: int = 4) -> str:
        """The estimate, its labelled interval and the Monte Carlo error, one line."""
        text = f"{self.estimate:.{digits}g}"
        if self.interval is not None:
            lo, hi = self.interval
            text += f"; {self.interval_method}: [{lo:.{digits}g}, {hi:.{digits}g}]"
        else:
            text += "; no statistical interval (a single fitted model)"
        if self.plugin is not None:
            text += f"; plug-in {self.plugin:.{digits}g}"
        return text + f"; Monte Carlo s.e. {self.mc_stderr:.2g}"

    def verdict(self) -> str:
        """Whether the question is identifiable, with the estimand or the reason."""
        verdict = self.estimand if self.identifiable else self.explanation
        state = "identifiable" if self.identifiable else "not identifiable"
        return f"{state}: {verdict}"


def ask(
    model: Any,
    query: str | Query,
    data: Mapping[str, Any] | Any = None,
    *,
    observed: Iterable[str] | None = None,
    strict: bool = False,
    where: Tensor | None = None,
    n: int = 10_000,
    prob: float = 0.9,
    draws: int = 100,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    units_arg: str | None = "n",
    method: str = "plugin",
    interval: str = "percentile",
    replicates: int | None = None,
    positivity: float = 0.02,
) -> QueryAnswer:
    """Check a causal question for identifiability, then answer it with ``model``.

    :param model: a fitted model (a Pyro program), or an uncertainty object: an
        :class:`~pyro_causalgen.analysis.uncertainty.Ensemble`, a
        :class:`~pyro_causalgen.analysis.bayesian.BayesianModel` (``draws``
        posterior draws) or a sequence of models; then the answer carries every
        member's draw and a ``prob`` interval (percentiles of the members' or
        posterior draws' answers).
    :param query: a question in the grammar of the module docstring, or a
        :class:`~pyro_causalgen.identify.CausalQuery` /
        :class:`~pyro_causalgen.identify.CounterfactualQuery`.
    :param data: observed rows ``{site: (rows, ...)}`` (or a DataFrame). Given, the
        question is answered for these units: each keeps its abducted noise in every
        term, conditions with a value select the rows that have it, and a condition
        without a value means each unit's own value.
    :param observed: the sites the model was fitted on (default: the columns of
        ``data``, else ``model.variables``); the others are latent and projected out
        of the graph before identification.
    :param strict: raise :class:`~pyro_causalgen.identify.Unidentifiable` instead of
        warning (:class:`~pyro_causalgen.identify.NonIdentifiableWarning`).
    :param where: boolean mask over the ``data`` rows (a subgroup).
    :param n: simulated units per model when there are no ``data``.
    :param prob: the probability mass of the interval (with members).
    :param draws: posterior draws of a ``BayesianModel``.
    :param model_args: positional arguments of the model.
    :param model_kwargs: keyword arguments of the model.
    :param units_arg: the model's keyword for the number of units (``None``: none).
    :param method: ``"plugin"``: simulate the answer from the model; ``"dr"``: the
        doubly robust (AIPW) answer for means and differences of means under
        ``do(t=a)`` of a discrete treatment ``t``, over all ``data`` rows or those
        with ``t=c`` (``E[y_{t=1} - y_{t=0} | t=1]``), with an influence-function
        interval (:mod:`~pyro_causalgen.analysis.doubly_robust`). With an ensemble
        whose ``weights`` mark held-out rows and ``data`` its own rows (or omitted),
        each row's nuisances come from the members that did not see it.
    :param interval: with members: ``"percentile"`` (default) or ``"t"`` (mean +/-
        Student t x spread, only if you want it).
    :param replicates: ``method="dr"``: simulated outcomes per row and treatment
        level (default ``max(16, ceil(n / rows))``).
    :param positivity: ``method="dr"``: warn when a propensity is below it or above
        ``1 - positivity``.
    :returns: a :class:`QueryAnswer`.
    :raises QuerySyntaxError: for malformed questions.
    :raises UnknownSiteError: naming a variable that the model does not have.
    :raises UnsupportedQueryError: for a shape of question that cannot be answered
        (a free treatment, a free condition without data, a joint of several
        outcomes, ...), saying which.

    Example::

        >>> def model(n):
        ...     with pyro.plate("units", n):
        ...         x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...         return pyro.sample("y", dist.Normal(2 * x, 1.0))
        >>> ans = ask(model, "E[y | do(x=1)] - E[y | do(x=0)]", observed=["x", "y"])
        >>> round(ans.estimate, 6), ans.identifiable  # common noise: exactly 2
        (2.0, True)
        >>> print(ans.estimand)
        P(y | do(x=1)) = P(y | x=1); P(y | do(x=0)) = P(y | x=0)
    """
    text = query if isinstance(query, str) else str(query)
    terms = parse_question(query)
    if method not in ("plugin", "dr"):
        raise ValueError(f"unknown method {method!r}; use 'plugin' or 'dr'")
    if method == "dr" and data is None and isinstance(model, Ensemble):
        data = model.data
    members, kind = _members(model, draws)
    kw = {
        "model_args": tuple(model_args),
        "model_kwargs": dict(model_kwargs or {}),
        "units_arg": units_arg,
    }
    base = members[0]
    rows = None if data is None else _as_rows(data, base)
    if where is not None and rows is None:
        raise UnsupportedQueryError("`where` selects data rows: pass `data` too")
    graph = _check_names(base, terms, kw)
    _check_conditions(graph, terms, rows)
    if observed is None:
        observed = _default_observed(base, rows)
    results = _identify(graph, terms, observed, strict)
    if method == "dr":
        if rows is None:
            raise UnsupportedQueryError(
                "method='dr' corrects the model with observed rows: pass `data`"
            )
        if where is not None:
            raise UnsupportedQueryError("method='dr' answers over all rows: no `where`")
        return _doubly_robust(
            model,
            members,
            text,
            terms,
            rows,
            graph,
            results,
            prob,
            kw,
            replicates or max(16, -(-n // next(iter(rows.values())).shape[0])),
            positivity,
        )

    def evaluate(m: Callable) -> tuple[MonteCarloEstimate, Tensor, Tensor | None]:
        if rows is None and not terms[0].evidence:
            return _simulated(m, terms, n, kw)
        return _conditioned(m, terms, rows, where, n, kw)

    if len(members) == 1:
        est, units, index = evaluate(base)
        return QueryAnswer(text, est.value, est.stderr, results, units, index)
    effect = effect_over_members(members, lambda m: evaluate(m)[0], text, method=kind)
    answer = QueryAnswer(
        text,
        effect.mean,
        effect.mc_error,
        results,
        draws=effect,
        prob=prob,
        interval=effect.interval(prob, interval),
        interval_method=effect.interval_label(prob, interval),
        stderr=effect.stderr,
    )
    effect.identifiable, effect.estimand = answer.identifiable, answer.estimand
    return answer


# ---------------------------------------------------------------- parsing


_EXPECTATION = re.compile(r"^E\s*\[(?P<body>.*)\]$", re.DOTALL)


def parse_question(query: str | Query) -> list[_Term]:
    """Split a question into signed single-outcome terms.

    :raises QuerySyntaxError: for malformed text.
    :raises UnsupportedQueryError: for shapes :func:`ask` does not answer.

    >>> [(t.sign, t.outcome, t.interventions) for t in parse_question(
    ...     "E[y_{x=1} - y_{x=0} | x=1]")]
    [(1.0, 'y', {'x': 1.0}), (-1.0, 'y', {'x': 0.0})]
    """
    if isinstance(query, Query):
        return [_term(1.0, query, str(query))]
    if not isinstance(query, str):
        raise TypeError(f"expected a query string, got {type(query).__name__}")
    text = query.strip()
    parts = _split(text, "-")
    if len(parts) > 2:
        raise UnsupportedQueryError(
            f"{text!r}: ask answers one expectation or the difference of two"
        )
    terms: list[_Term] = []
    for sign, part in zip((1.0, -1.0), parts):
        m = _EXPECTATION.match(part.strip())
        if m is None and part.strip().startswith("E["):
            raise QuerySyntaxError(f"malformed query {text!r}: 'E[' is never closed")
        if m is None:
            terms.append(_term(sign, parse_query(part, free_values=True), text))
            continue
        sides = _split(m.group("body"), "|")
        if len(sides) > 2:
            raise QuerySyntaxError(f"malformed query {text!r}: more than one '|'")
        given = f" | {sides[1]}" if len(sides) == 2 else ""
        inner = _split(sides[0], "-")
        if len(inner) > 2 or (len(inner) == 2 and len(parts) == 2):
            raise UnsupportedQueryError(
                f"{text!r}: ask answers one expectation or the difference of two"
            )
        for s, term in zip((sign, -sign), inner):
            q = parse_query(f"P({term}{given})", free_values=True)
            terms.append(_term(s, q, text))
    evidence = {tuple(sorted(t.evidence.items(), key=str)) for t in terms}
    if len(evidence) > 1:
        raise UnsupportedQueryError(
            f"{text!r}: every term of a difference needs the same conditions"
        )
    return terms


def _split(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside brackets (a ``-`` after ``=`` is a sign)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == sep and depth == 0:
            before = text[:i].rstrip()
            if sep == "-" and (not before or before[-1] in "=,|"):
                continue
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return float(value)
    raise UnsupportedQueryError(f"{what} must be a number, got {value!r}")


def _term(sign: float, q: Query, text: str) -> _Term:
    if isinstance(q, CausalQuery):
        if len(q.outcomes) != 1:
            raise UnsupportedQueryError(
                f"{text!r}: ask answers one quantity; ask about "
                f"{', '.join(map(repr, q.outcomes))} one at a time"
            )
        free = [t for t in q.treatments if t not in q.values]
        if free:
            raise UnsupportedQueryError(
                f"{text!r}: treatment {free[0]!r} has no value; write do({free[0]}=1)"
            )
        y, value = q.outcomes[0], q.values.get(q.outcomes[0])
        do = {
            t: _number(q.values[t], f"the value of do({t}=...)") for t in q.treatments
        }
        evidence = {c: q.values.get(c) for c in q.conditions}
        if (
            evidence and not do
        ):  # a factual term given evidence, e.g. y in E[y_{x=1} - y | x=0]
            q = CounterfactualQuery(
                [Event(Variable(y), Symbol(y, y) if value is None else value)],
                [
                    Event(Variable(c), Symbol(c, c) if v is None else v)
                    for c, v in evidence.items()
                ],
            )
        return _Term(sign, y, value, do, evidence, q)
    assert isinstance(q, CounterfactualQuery)
    if len(q.events) != 1:
        raise UnsupportedQueryError(
            f"{text!r}: ask answers the mean of one counterfactual outcome, not the "
            f"joint of {len(q.events)} events"
        )
    event = q.events[0]
    for e in q.evidence:
        if e.variable.interventions:
            raise UnsupportedQueryError(
                f"{text!r}: evidence must be factual, but {e.variable} has a subscript"
            )
    value = None if isinstance(event.value, Symbol) else event.value
    do = {
        k: _number(v, f"the value of {k} in {event.variable}")
        for k, v in event.variable.interventions
    }
    evidence = {
        e.variable.name: None if isinstance(e.value, Symbol) else e.value
        for e in q.evidence
    }
    return _Term(sign, event.variable.name, value, do, evidence, q)


# ------------------------------------------------------- models and checks


def _members(model: Any, draws: int) -> tuple[list[Callable], str | None]:
    if isinstance(model, Ensemble):
        return list(model.members), model.method
    if isinstance(model, BayesianModel):
        return list(model.posterior_models(draws)), "bayesian"
    if isinstance(model, Sequence):
        if len(model) == 0:
            raise ValueError("ask: empty sequence of models")
        return list(model), "ensemble"
    if not callable(model):
        raise TypeError(f"ask: expected a model or an ensemble, got {type(model)!r}")
    return [model], None


def _placement(model: Any) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a model's first floating tensor (else defaults)."""
    inner = getattr(model, "params", None)
    tensors = list(inner.values()) if isinstance(inner, Mapping) else []
    if isinstance(model, nn.Module):
        tensors += list(model.parameters()) + list(model.buffers())
    for t in tensors:
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _as_rows(data: Any, model: Any) -> dict[str, Tensor]:
    device, dtype = _placement(model)
    if hasattr(data, "columns"):  # a pandas DataFrame
        data = {str(c): data[c].to_numpy() for c in data.columns}
    if not isinstance(data, Mapping) or not data:
        raise DataError("data must be a non-empty mapping {site: (rows, ...)} values")
    rows = {}
    for name, v in data.items():
        t = torch.as_tensor(v, device=device)
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise DataError(f"data column '{name}' has NaN or infinite values")
        rows[name] = t.to(dtype) if t.is_floating_point() else t
    lengths = {k: v.shape[0] if v.dim() else 0 for k, v in rows.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise DataError(f"data columns need the same number of rows, got {lengths}")
    return rows


def _units_kwargs(kw: Mapping[str, Any], units: int) -> dict[str, Any]:
    out = dict(kw["model_kwargs"])
    if kw["units_arg"]:
        out[kw["units_arg"]] = units
    return out


def _check_names(model: Callable, terms: list[_Term], kw: Mapping) -> ADMG:
    """The graph over every site of ``model``; unknown names in a term raise."""
    full = extract_graph(
        model, None, model_args=kw["model_args"], model_kwargs=_units_kwargs(kw, 1)
    )
    for t in terms:
        for name in [t.outcome, *t.interventions, *t.evidence]:
            if name not in full:
                raise UnknownSiteError(
                    f"the query names {name!r}, which is not a site of the model; "
                    f"its sites are {list(full.nodes)}"
                )
    return full


def _check_conditions(graph: ADMG, terms: list[_Term], rows: Mapping | None) -> None:
    for t in terms:
        if isinstance(t.query, CausalQuery) and t.evidence:
            after = graph.descendants(list(t.interventions), include_self=False)
            late = sorted(set(t.evidence) & after)
            if late:
                raise UnsupportedQueryError(
                    f"{t.query}: condition {late[0]!r} is affected by the treatment; "
                    "ask the counterfactual form, e.g. "
                    f"E[{t.outcome}_{{...}} | {late[0]}=...], which conditions on "
                    "the factual value"
                )
        free = [c for c, v in t.evidence.items() if v is None]
        if free and rows is None:
            raise UnsupportedQueryError(
                f"{t.query}: condition {free[0]!r} has no value; give one "
                f"({free[0]}=...) or pass data rows to condition each unit on its own"
            )
        if rows is not None:
            missing = sorted(set(t.evidence) - set(rows))
            if missing:
                raise DataError(
                    f"the query conditions on {missing}, which data lacks; "
                    f"its columns are {sorted(rows)}"
                )


def _default_observed(model: Any, rows: Mapping | None) -> list[str]:
    if rows is not None:
        return list(rows)
    names = getattr(getattr(model, "model", model), "variables", None)
    if names is None:
        raise UnsupportedQueryError(
            "ask needs to know which sites the model was fitted on, to check "
            "identifiability: pass observed=[...] (or data)"
        )
    return list(names)


def _identify(
    graph: ADMG, terms: list[_Term], observed: Iterable[str], strict: bool
) -> tuple[IdentificationResult, ...]:
    observed = list(observed)
    hidden = sorted(
        {n for t in terms for n in (t.outcome, *t.interventions, *t.evidence)}
        - set(observed)
    )
    if hidden:
        raise UnsupportedQueryError(
            f"the query names {hidden}, not observed (observed: {observed}); "
            "identification is about observed variables"
        )
    projected = as_graph(graph, observed)
    queries = list(dict.fromkeys(t.query for t in terms))
    return tuple(check_identifiable(projected, q, strict=strict) for q in queries)


# -------------------------------------------------------------- answering


def _quantity(term: _Term, values: Mapping[str, Tensor]) -> Tensor:
    y = site_values(values, term.outcome).double()
    if term.value is None:
        return y.reshape(y.shape[0], -1).mean(-1) if y.dim() > 1 else y
    hit = (y == _number(term.value, f"the value of {term.outcome}")).double()
    return hit.reshape(hit.shape[0], -1).all(-1).double() if hit.dim() > 1 else hit


def _simulated(
    model: Callable, terms: list[_Term], n: int, kw: Mapping
) -> tuple[MonteCarloEstimate, Tensor, None]:
    """Unconditional terms: ``n`` units per term, with the same noise in each."""
    runs = paired_simulations(model, [t.interventions for t in terms], n, **kw)
    units = sum(t.sign * _quantity(t, run) for t, run in zip(terms, runs))
    return _mean_and_se(units, None), units, None  # type: ignore[arg-type]


def _conditioned(
    model: Callable,
    terms: list[_Term],
    rows: Mapping[str, Tensor] | None,
    where: Tensor | None,
    n: int,
    kw: Mapping,
) -> tuple[MonteCarloEstimate, Tensor, Tensor | None]:
    """Each unit's noise abducted from its observations, shared by every term."""
    evidence = terms[0].evidence
    device, dtype = _placement(model)
    if rows is None:  # n units that all show the conditions' values
        obs = {
            k: torch.full((n,), _number(v, f"the value of {k}"), device=device).to(
                dtype
            )
            for k, v in evidence.items()
        }
    else:
        obs = dict(rows)
    count = next(iter(obs.values())).shape[0]
    names = [f"term{i}" if t.interventions else "factual" for i, t in enumerate(terms)]
    worlds = {w: t.interventions for w, t in zip(names, terms) if t.interventions}
    out = counterfactual(
        model, obs, worlds, *kw["model_args"], **_units_kwargs(kw, count)
    )
    units = sum(t.sign * _quantity(t, out[w]) for w, t in zip(names, terms))
    assert isinstance(units, Tensor)
    if rows is None:
        return _mean_and_se(units.detach(), None), units.detach(), None
    keep = torch.ones(count, dtype=torch.bool, device=units.device)
    for name, value in evidence.items():
        if value is not None:
            column = rows[name].reshape(count, -1)
            keep &= (column == _number(value, f"the value of {name}")).all(-1)
    if where is not None:
        if where.shape != (count,):
            raise DataError(f"`where` must be a ({count},) mask, got {where.shape}")
        keep &= where.to(keep.device).bool()
    if not bool(keep.any()):
        shown = {k: v for k, v in evidence.items() if v is not None}
        raise DataError(f"no data row satisfies {shown or '`where`'}")
    index = keep.nonzero().squeeze(-1)
    selected = units.detach()[index]
    return _mean_and_se(selected, None), selected, index


# ------------------------------------------------------- doubly robust


def _doubly_robust(
    model: Any,
    members: list[Callable],
    text: str,
    terms: list[_Term],
    rows: dict[str, Tensor],
    graph: ADMG,
    results: tuple[IdentificationResult, ...],
    prob: float,
    kw: Mapping,
    replicates: int,
    positivity: float,
) -> QueryAnswer:
    """The AIPW answer (see :mod:`~pyro_causalgen.analysis.doubly_robust`)."""
    treated = {t for term in terms for t in term.interventions}
    if len(treated) != 1 or any(len(term.interventions) > 1 for term in terms):
        raise UnsupportedQueryError(
            f"{text!r}: method='dr' answers means under do() of one treatment, "
            f"got interventions on {sorted(treated) or 'nothing'}"
        )
    (treatment,) = treated
    aipw_terms = []
    for term in terms:
        extra = sorted(set(term.evidence) - {treatment})
        given = term.evidence.get(treatment)
        if extra or (treatment in term.evidence and given is None):
            raise UnsupportedQueryError(
                f"{text!r}: method='dr' conditions only on a value of the treatment "
                f"'{treatment}' (e.g. | {treatment}=1), not on {extra or [treatment]}"
            )
        given = None if given is None else _number(given, f"the value of {treatment}")
        level = term.interventions.get(treatment, given)
        assert level is not None
        aipw_terms.append(AIPWTerm(term.sign, level, given))
    covariates = adjustment_sites(graph, treatment, list(rows))
    levels = sorted(
        {a.level for a in aipw_terms}
        | {a.given for a in aipw_terms if a.given is not None}
    )
    use = None
    if (
        isinstance(model, Ensemble)
        and model.weights is not None
        and _same_rows(model.data, rows)
    ):
        use = model.weights == 0
    outcome = terms[0]
    nuisances = estimate_nuisances(
        members,
        rows,
        treatment,
        covariates,
        levels,
        lambda values: _quantity(outcome, values),
        replicates,
        use,
        kw,
    )
    est = aipw(
        aipw_terms, rows[treatment], _quantity(outcome, rows), nuisances, positivity
    )
    n = len(rows[treatment])
    how = "influence function, normal approximation"
    if est.held_out_rows:
        how += f", cross-fitted ({est.held_out_rows} of {n} rows out of sample)"
    return QueryAnswer(
        text,
        est.estimate,
        est.mc_stderr,
        results,
        prob=prob,
        interval=est.interval(prob),
        interval_method=f"{prob:.0%} interval, {how}",
        stderr=est.stderr,
        method="dr",
        plugin=est.plugin,
        doubly_robust=est,
    )


def _same_rows(fitted: Mapping[str, Tensor] | None, rows: Mapping[str, Tensor]) -> bool:
    """Whether ``rows`` are the rows an ensemble was fitted on (same values)."""
    if fitted is None:
        return False
    for name, v in fitted.items():
        if name not in rows or rows[name].shape != v.shape:
            return False
        if not torch.equal(rows[name].cpu().to(v.dtype), v.cpu()):
            return False
    return True


__all__ = ["QueryAnswer", "UnsupportedQueryError", "ask", "parse_question"]
