"""Witnesses of non-identifiability: hedges (ID / IDC) and counterfactual conflicts
(ID* / IDC*)."""

from __future__ import annotations

from dataclasses import dataclass, field


def _set(names: frozenset[str] | tuple[str, ...]) -> str:
    return "{" + ", ".join(names) + "}"


@dataclass(frozen=True)
class Hedge:
    """A hedge for ``P(outcomes | do(treatments))`` (Shpitser & Pearl, 2006, Def. 5).

    ``F`` and ``F'`` are R-rooted C-forests with ``F' ⊂ F``, ``F`` meets the
    treatments and ``F'`` does not; by Theorem 4 of the paper two models that agree
    on the observational distribution but disagree on the effect can be built on
    them, so the effect is not identifiable.

    :ivar f: the nodes of ``F`` (in topological order).
    :ivar f_prime: the nodes of ``F'``.
    :ivar root: the root set ``R`` (nodes of ``F'`` without children in ``F'``).
    :ivar treatments: the treatments in ``F``.
    :ivar context: the (sub)query the hedge was found for.

    >>> h = Hedge(("X", "Y"), ("Y",), ("Y",), ("X",), "P(Y | do(X))")
    >>> print(h.explanation)  # doctest: +NORMALIZE_WHITESPACE
    P(Y | do(X)) is not identifiable: F = {X, Y} and F' = {Y} form a hedge
    (Shpitser & Pearl 2006, Theorem 4). Both are single districts whose nodes are
    ancestors of the root set R = {Y}; F' lies inside F, F contains the treatments
    {X} and F' none of them, so two models that agree on P(V) differ on the effect.
    """

    f: tuple[str, ...]
    f_prime: tuple[str, ...]
    root: tuple[str, ...]
    treatments: tuple[str, ...]
    context: str = ""

    @property
    def explanation(self) -> str:
        """A readable account of why the hedge proves non-identifiability."""
        head = f"{self.context} is not identifiable: " if self.context else ""
        return (
            f"{head}F = {_set(self.f)} and F' = {_set(self.f_prime)} form a hedge "
            "(Shpitser & Pearl 2006, Theorem 4). Both are single districts whose "
            f"nodes are ancestors of the root set R = {_set(self.root)}; F' lies "
            f"inside F, F contains the treatments {_set(self.treatments)} and F' "
            "none of them, so two models that agree on P(V) differ on the effect."
        )

    def __str__(self) -> str:
        return f"hedge F = {_set(self.f)}, F' = {_set(self.f_prime)}"


@dataclass(frozen=True)
class CounterfactualWitness:
    """Why ID* / IDC* (Shpitser & Pearl, 2008) fail for a counterfactual query.

    :ivar reason: ``"conflict"`` (line 8 of ID*: a district of the counterfactual
        graph needs one variable at two values, one of them in a subscript) or
        ``"hedge"`` (the district's interventional factor has a hedge).
    :ivar district: the counterfactual variables of the offending district of the
        counterfactual graph, as strings like ``"Y_{X=1}"``.
    :ivar conflict: the variable and its clashing values, for ``"conflict"``.
    :ivar hedge: the hedge, for ``"hedge"``.
    :ivar context: the (sub)query the witness was found for.

    >>> w = CounterfactualWitness("conflict", ("Y_{X=0}", "Y_{X=1}"), ("X", (0, 1)))
    >>> print(w.explanation)  # doctest: +NORMALIZE_WHITESPACE
    the counterfactual graph has a district {Y_{X=0}, Y_{X=1}} that needs X at
    the values 0 and 1 at once, one of them set by intervention (Shpitser & Pearl
    2008, ID* line 8): no experiment on this graph determines its joint
    distribution, so the query is not identifiable.
    """

    reason: str
    district: tuple[str, ...]
    conflict: tuple[str, tuple] | None = None
    hedge: Hedge | None = None
    context: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def explanation(self) -> str:
        """A readable account of the failure."""
        head = f"{self.context} is not identifiable: " if self.context else ""
        if self.reason == "hedge" and self.hedge is not None:
            return (
                f"{head}the district {_set(self.district)} of the counterfactual "
                "graph reduces to an interventional factor that is not identifiable; "
                + self.hedge.explanation
            )
        var, values = self.conflict or ("?", ())
        shown = " and ".join(str(v) for v in values)
        return (
            f"{head}the counterfactual graph has a district {_set(self.district)} "
            f"that needs {var} at the values {shown} at once, one of them set by "
            "intervention (Shpitser & Pearl 2008, ID* line 8): no experiment on "
            "this graph determines its joint distribution, so the query is not "
            "identifiable."
        )

    def __str__(self) -> str:
        if self.reason == "hedge" and self.hedge is not None:
            return f"district {_set(self.district)}: {self.hedge}"
        return f"conflicting district {_set(self.district)} on {self.conflict}"


__all__ = ["CounterfactualWitness", "Hedge"]
