"""``identify``: is a query determined by the observational distribution?"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pyro_causalgen.graph.admg import ADMG
from pyro_causalgen.identify.errors import Unidentifiable, UnknownVariableError
from pyro_causalgen.identify.estimand import Estimand, rename_bound
from pyro_causalgen.identify.id_algorithm import IDEngine, _Fail, hedge_masks_to_names
from pyro_causalgen.identify.parser import as_query
from pyro_causalgen.identify.query import CausalQuery, CounterfactualQuery, Query
from pyro_causalgen.identify.witness import CounterfactualWitness, Hedge


class IdentificationResult:
    """The answer of :func:`identify`.

    :ivar query: the query asked.
    :ivar graph: the graph used.
    :ivar identifiable: whether the query is identifiable.
    :ivar estimand: the :class:`Estimand` (``None`` when not identifiable).
    :ivar witness: the :class:`Hedge` or :class:`CounterfactualWitness` proving
        non-identifiability (``None`` when identifiable).
    :ivar algorithm: ``"ID"``, ``"IDC"``, ``"ID*"`` or ``"IDC*"``.

    >>> r = identify("X -> Y; X <-> Y", "P(Y | do(X))")
    >>> r.identifiable, str(r.witness)
    (False, "hedge F = {X, Y}, F' = {Y}")
    """

    def __init__(
        self,
        query: Query,
        graph: ADMG,
        estimand: Estimand | None,
        witness: Hedge | CounterfactualWitness | None,
        algorithm: str,
    ) -> None:
        self.query = query
        self.graph = graph
        self.estimand = estimand
        self.witness = witness
        self.algorithm = algorithm

    @property
    def identifiable(self) -> bool:
        return self.estimand is not None

    def __bool__(self) -> bool:
        return self.identifiable

    @property
    def explanation(self) -> str:
        """One paragraph: the estimand, or why the query is not identifiable.

        >>> print(identify("X -> Y", "P(Y | do(X))").explanation)
        P(Y | do(X)) is identifiable (ID): P(Y | do(X)) = P(Y | X)
        """
        if self.estimand is not None:
            return (
                f"{self.query} is identifiable ({self.algorithm}): "
                f"{self.query} = {self.estimand}"
            )
        return self.witness.explanation  # type: ignore[union-attr]

    def raise_if_unidentifiable(self) -> IdentificationResult:
        """Return ``self``, or raise :class:`Unidentifiable` naming the witness.

        >>> identify("X -> Y", "P(Y | do(X))").raise_if_unidentifiable().algorithm
        'ID'
        """
        if self.estimand is None:
            raise Unidentifiable(self.explanation, self.witness)
        return self

    def __str__(self) -> str:
        return self.explanation

    def __repr__(self) -> str:
        state = "identifiable" if self.identifiable else "not identifiable"
        return f"<IdentificationResult {self.query!s}: {state} ({self.algorithm})>"


def as_graph(
    graph_or_model: ADMG | str | Callable[..., Any],
    observed: Iterable[str] | None = None,
    **extract_kwargs: Any,
) -> ADMG:
    """An :class:`ADMG` from a graph, a graph string or a Pyro program.

    :param graph_or_model: the graph, its compact string, or a Pyro program.
    :param observed: for a program, the observed sites (others are projected out).
    :returns: the graph.

    >>> print(as_graph("X -> Y"))
    X -> Y
    """
    if isinstance(graph_or_model, (ADMG, str)):
        g = ADMG.coerce(graph_or_model)
        if observed is not None:
            keep = set([observed] if isinstance(observed, str) else observed)
            for v in keep:
                g._bit(v)
            latent = [v for v in g.nodes if v not in keep]
            if latent:
                g = g.latent_projection(latent)
        return g
    if callable(graph_or_model):
        from pyro_causalgen.graph.extract import extract_graph

        return extract_graph(graph_or_model, observed, **extract_kwargs)
    raise TypeError(
        "expected an ADMG, a graph string or a Pyro program, got "
        f"{type(graph_or_model)!r}"
    )


def _check_names(graph: ADMG, query: Query) -> None:
    for v in query.variables:
        if v not in graph:
            shown = ", ".join(graph.nodes) if len(graph) <= 20 else "..."
            raise UnknownVariableError(
                f"query mentions unknown variable {v!r}; the graph has {shown}"
            )


def identify(
    graph_or_model: ADMG | str | Callable[..., Any],
    query: Query | str,
    observed: Iterable[str] | None = None,
    *,
    strict: bool = False,
) -> IdentificationResult:
    """Decide whether ``query`` is identifiable from the observational distribution.

    Interventional queries use ID, or IDC when they have conditions (Shpitser &
    Pearl, 2006); counterfactual queries use ID* / IDC* (Shpitser & Pearl, 2008).
    All four are complete: a failure comes with a witness that proves the query
    is not identifiable.

    :param graph_or_model: an :class:`ADMG`, a graph string such as
        ``"X -> Y; X <-> Y"``, or a Pyro program (its graph is extracted).
    :param query: a query object or string such as ``"P(Y | do(X), Z)"``.
    :param observed: the observed variables; the others are projected out.
    :param strict: raise :class:`Unidentifiable` instead of returning a negative
        result.
    :returns: an :class:`IdentificationResult`.
    :raises UnknownVariableError: if the query names a variable not in the graph.
    :raises QuerySyntaxError: if the query string is malformed.
    :raises Unidentifiable: in strict mode, when the query is not identifiable.

    >>> r = identify("X -> M -> Y; X <-> Y", "P(Y | do(X))")
    >>> print(r.estimand)
    Σ_{M} P(M | X) [Σ_{X'} P(X') P(Y | X', M)]
    """
    graph = as_graph(graph_or_model, observed)
    q = as_query(query)
    _check_names(graph, q)
    if isinstance(q, CounterfactualQuery):
        from pyro_causalgen.identify.id_star import identify_counterfactual

        result = identify_counterfactual(graph, q)
    else:
        result = _identify_causal(graph, q)  # type: ignore[arg-type]
    if strict:
        result.raise_if_unidentifiable()
    return result


def _identify_causal(graph: ADMG, q: CausalQuery) -> IdentificationResult:
    engine = IDEngine(graph)
    algorithm = "IDC" if q.conditions else "ID"
    try:
        if q.conditions:
            expr = engine.identify_conditional(q.outcomes, q.treatments, q.conditions)
        else:
            expr = engine.identify(q.outcomes, q.treatments)
    except _Fail as fail:
        f, fp, root = hedge_masks_to_names(graph, fail)
        treat = tuple(v for v in f if v in set(q.treatments))
        hedge = Hedge(f, fp, root, treat, str(q))
        return IdentificationResult(q, graph, None, hedge, algorithm)
    idx = graph._index
    syms = engine.syms
    fixed = {syms[idx[k]]: v for k, v in q.values.items()}
    if fixed:
        expr = expr.substitute(fixed)
    expr = rename_bound(expr)
    outputs = [
        (v, syms[idx[v]])
        for v in q.outcomes + q.treatments + q.conditions
        if v not in q.values
    ]
    return IdentificationResult(q, graph, Estimand(expr, q, outputs), None, algorithm)


__all__ = ["IdentificationResult", "as_graph", "identify"]
