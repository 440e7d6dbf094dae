"""ID* and IDC*: identification of counterfactual queries (Shpitser & Pearl, 2007,
"What counterfactuals can be tested", UAI; 2008, "Complete identification methods
for the causal hierarchy", JMLR 9, Figs. 5-8).

::

    function ID*(G, γ)
    1  if γ = ∅, return 1
    2  if (∃ x_{x'} ∈ γ) with x ≠ x', return 0
    3  if (∃ x_x ∈ γ), return ID*(G, γ \\ {x_x})
    4  (G', γ') = make-cg(G, γ)
    5  if γ' = INCONSISTENT, return 0
    6  if C(G') = {S^1, ..., S^k}, return Σ_{V(G') \\ γ'} Π_i ID*(G, s^i_{v(G') \\ s^i})
    7  if C(G') = {S} then
    8    if (∃ x, x') s.t. x ≠ x', x ∈ sub(S), x' ∈ ev(S), throw FAIL
    9    else, let x = ∪ sub(S), return P_x(var(S))

    function IDC*(G, γ, δ)
    1  if ID*(G, δ) = 0, return UNDEFINED
    2  (G', γ' ∧ δ') = make-cg(G, γ ∧ δ)
    3  if γ' ∧ δ' = INCONSISTENT, return 0
    4  if (∃ y_x ∈ δ') s.t. (Y_x ⊥ γ') in G'_{\\underline{y_x}},
           return IDC*(G, γ'_{y_x}, δ' \\ {y_x})
    5  let P' = ID*(G, γ' ∧ δ'), return P' / P'(δ)

Observational data only.  Line 9's ``P_x(var(S))`` is an interventional
distribution; we identify it from ``P(v)`` with ID, so a hedge there also makes
the counterfactual unidentifiable (witness ``reason="hedge"``).

Reading of the paper, where it is terse (checked numerically in the tests):

* Before line 1, subscripts on non-ancestors of an event's variable are dropped
  (exclusion restrictions: they change nothing).
* make-cg (Lemmas 24, 25 of the JMLR paper): in topological order, two copies of
  a variable are merged when each pair of corresponding parents is the same node
  or both attain the same value, fixed by intervention or observed in γ'.  The
  merged node keeps the copy from the world with fewest interventions, so that
  ``P(Y_x = y, X = x)`` becomes ``P(Y = y, X = x)``.  Intervened copies are
  constants, not nodes of G'.
* Line 6: the term of district ``S^i`` subscripts each of its nodes ``α`` with the
  values of the parents, outside ``S^i``, of ``α``'s ancestors inside ``S^i``
  (intervening on the rest of ``v(G') \\ s^i`` changes nothing).  Nodes of G' not
  in γ' get fresh value symbols (``W'``), summed over.
* Lines 8-9: FAIL when the subscripts of ``S`` give one variable two values, when
  a subscript clashes with a value observed in ``S``, or when ``S`` holds two
  copies of one variable (as in the probability of necessity and sufficiency,
  ``P(Y_{X=1}=1, Y_{X=0}=0)``).
* IDC* line 4 is read as the counterfactual version of rule 2 of do-calculus:
  ``Y_x`` must be m-separated from γ' *given the rest of δ'* in ``G'`` with the
  edges out of ``y_x`` removed, and the value ``y`` is added to the subscripts of
  the events of γ' that descend from ``y_x``, provided no other copy of ``Y`` is
  their ancestor.  Conditioning on the rest of δ' is the sound form of the test;
  the unconditional test printed in the paper can open collider paths.  The
  denominator ``P'(δ)`` of line 5 is ``ID*(G, δ')``, the same marginal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyro_causalgen.graph.admg import ADMG
from pyro_causalgen.identify.estimand import (
    Constant,
    Estimand,
    Expression,
    Fraction,
    Product,
    Sum,
    rename_bound,
)
from pyro_causalgen.identify.id_algorithm import IDEngine, _Fail, hedge_masks_to_names
from pyro_causalgen.identify.query import CounterfactualQuery, Symbol, Variable
from pyro_causalgen.identify.witness import CounterfactualWitness, Hedge

World = tuple[tuple[str, Any], ...]
CfEvent = tuple[str, World, Any]  # (variable, world, value)
Node = tuple[str, World]

_MAX_DEPTH = 200


class _StarFail(Exception):
    def __init__(self, witness: CounterfactualWitness) -> None:
        super().__init__(witness)
        self.witness = witness


class _Inconsistent(Exception):
    pass


def _label(node: Node) -> str:
    return str(Variable(node[0], node[1]))


def _same(a: Any, b: Any) -> bool:
    return (
        type(a) is type(b)
        and a == b
        or (not isinstance(a, Symbol) and not isinstance(b, Symbol) and a == b)
    )


@dataclass
class CounterfactualGraph:
    """The result of make-cg: nodes, parents, bidirected edges and events.

    :ivar nodes: counterfactual nodes ``(variable, world)`` in topological order.
    :ivar parents: for each node, its parents: nodes, or ``("=", var, value)`` for
        constants fixed by intervention.
    :ivar events: ``{node: value}``, the relabelled conjunction γ'.
    """

    nodes: list[Node]
    parents: dict[Node, list[Any]]
    events: dict[Node, Any]
    confounded: set[frozenset[str]]
    rep: dict[Node, Node]

    def find(self, node: Node) -> Node:
        """The node that ``node`` was merged into (itself if none)."""
        while node in self.rep:
            node = self.rep[node]
        return node

    def bidirected(self, a: Node, b: Node) -> bool:
        return a != b and (a[0] == b[0] or frozenset((a[0], b[0])) in self.confounded)

    def districts(self) -> list[list[Node]]:
        out: list[list[Node]] = []
        seen: set[Node] = set()
        for n in self.nodes:
            if n in seen:
                continue
            comp = [n]
            seen.add(n)
            k = 0
            while k < len(comp):
                a = comp[k]
                k += 1
                for b in self.nodes:
                    if b not in seen and self.bidirected(a, b):
                        seen.add(b)
                        comp.append(b)
            out.append(sorted(comp, key=self.nodes.index))
        return out

    def to_admg(self) -> ADMG:
        """The counterfactual graph as an :class:`ADMG` over node labels."""
        lab = {n: _label(n) for n in self.nodes}
        directed = [
            (lab[p], lab[n])
            for n in self.nodes
            for p in self.parents[n]
            if p[0] != "=" and p in lab
        ]
        bid = [
            (lab[a], lab[b])
            for i, a in enumerate(self.nodes)
            for b in self.nodes[i + 1 :]
            if self.bidirected(a, b)
        ]
        return ADMG(directed, bid, [lab[n] for n in self.nodes])


def make_cg(graph: ADMG, gamma: list[CfEvent]) -> CounterfactualGraph:
    """make-cg (Shpitser & Pearl, 2008, Fig. 5): the counterfactual graph of γ.

    :param graph: the causal diagram.
    :param gamma: events ``(variable, world, value)``; a world is a sorted tuple of
        ``(variable, value)`` pairs.
    :returns: the counterfactual graph and relabelled events.
    :raises _Inconsistent: if two merged nodes carry different values.

    >>> g = ADMG.from_string("X -> Y; X <-> Y")
    >>> cg = make_cg(g, [("Y", (("X", 1),), 1), ("X", (), 1)])
    >>> sorted(cg.events.items())
    [(('X', ()), 1), (('Y', ()), 1)]
    """
    worlds: list[World] = []
    for _, w, _ in gamma:
        if w not in worlds:
            worlds.append(w)
    order = graph.topological_order()
    rep: dict[Node, Node] = {}

    def find(n: Node) -> Node:
        while n in rep:
            n = rep[n]
        return n

    def parent_of(v: str, w: World, p: str) -> Any:
        wd = dict(w)
        return ("=", p, wd[p]) if p in wd else (p, w)

    events: dict[Node, Any] = {}
    for v, w, val in gamma:
        node = (v, w)
        if node in events and not _same(events[node], val):
            raise _Inconsistent(f"{_label(node)} is given two values")
        events[node] = val

    def value_of(n: Any) -> Any:
        if n[0] == "=":
            return ("const", n[2])
        r = find(n)
        if r in events:
            return ("const", events[r])
        return None

    def same_value(a: Any, b: Any) -> bool:
        if a[0] != "=" and b[0] != "=" and find(a) == find(b):
            return True
        va, vb = value_of(a), value_of(b)
        return va is not None and vb is not None and _same(va[1], vb[1])

    parents_of = {v: sorted(graph.parents(v), key=order.index) for v in order}
    for v in order:
        copies = [(v, w) for w in worlds if v not in dict(w)]
        for i in range(len(copies)):
            for j in range(i + 1, len(copies)):
                a, b = find(copies[i]), find(copies[j])
                if a == b:
                    continue
                if not all(
                    same_value(
                        parent_of(v, copies[i][1], p), parent_of(v, copies[j][1], p)
                    )
                    for p in parents_of[v]
                ):
                    continue
                keep, drop = (a, b) if len(a[1]) <= len(b[1]) else (b, a)
                rep[drop] = keep
                if drop in events:
                    dv = events.pop(drop)
                    if keep in events and not _same(events[keep], dv):
                        raise _Inconsistent(
                            f"{_label(keep)} and {_label(drop)} are the same variable "
                            "but are given different values"
                        )
                    events[keep] = dv
    # G' = ancestors of the events (constants are not nodes)
    parents: dict[Node, list[Any]] = {}
    stack = list(events)
    seen = set(stack)
    while stack:
        n = stack.pop()
        ps = []
        for p in parents_of[n[0]]:
            q = parent_of(n[0], n[1], p)
            if q[0] != "=":
                q = find(q)
                if q not in seen:
                    seen.add(q)
                    stack.append(q)
            ps.append(q)
        parents[n] = ps
    rank = {v: k for k, v in enumerate(order)}
    wrank = {w: k for k, w in enumerate(worlds)}
    nodes = sorted(seen, key=lambda n: (rank[n[0]], wrank.get(n[1], 0)))
    confounded = {frozenset(e) for e in graph.bidirected_edges}
    return CounterfactualGraph(nodes, parents, events, confounded, rep)


class _Run:
    """One identification run: the graph, an ID engine and fresh symbol names."""

    def __init__(self, graph: ADMG) -> None:
        self.graph = graph
        self.engine = IDEngine(graph)
        self.names: set[str] = set(graph.nodes)
        self.depth = 0

    def fresh(self, var: str) -> Symbol:
        name = var + "'"
        while name in self.names:
            name += "'"
        self.names.add(name)
        return Symbol(name, var)

    def prune(self, gamma: list[CfEvent]) -> list[CfEvent]:
        """Drop subscripts on non-ancestors of the event variable; dedupe."""
        out: list[CfEvent] = []
        for v, w, val in gamma:
            anc = self.graph.ancestors(v)
            ev = (v, tuple((k, x) for k, x in w if k in anc), val)
            if ev not in out:
                out.append(ev)
        return out

    # ------------------------------------------------------------------ ID*
    def id_star(self, gamma: list[CfEvent]) -> Expression:
        self.depth += 1
        try:
            if self.depth > _MAX_DEPTH:  # pragma: no cover - defensive
                raise RecursionError("ID* recursion too deep")
            return self._id_star(self.prune(gamma))
        finally:
            self.depth -= 1

    def _id_star(self, gamma: list[CfEvent]) -> Expression:
        # line 1
        if not gamma:
            return Constant(1)
        # line 2: x_{x'} with x ≠ x' violates effectiveness
        for v, w, val in gamma:
            wd = dict(w)
            if v in wd and not _same(wd[v], val):
                return Constant(0)
        # line 3: drop tautologies x_x
        gamma = [(v, w, val) for v, w, val in gamma if v not in dict(w)]
        if not gamma:
            return Constant(1)
        # lines 4-5
        try:
            cg = make_cg(self.graph, gamma)
        except _Inconsistent:
            return Constant(0)
        districts = cg.districts()
        # line 6
        if len(districts) > 1:
            values: dict[Node, Any] = dict(cg.events)
            summed: list[Symbol] = []
            for n in cg.nodes:
                if n not in values:
                    s = self.fresh(n[0])
                    values[n] = s
                    summed.append(s)
            terms = [self._district_term(cg, d, values) for d in districts]
            body: Expression = terms[0] if len(terms) == 1 else Product(terms)
            return Sum(body, summed) if summed else body
        # lines 7-9
        return self._single_district(cg, districts[0])

    def _district_term(
        self, cg: CounterfactualGraph, district: list[Node], values: dict[Node, Any]
    ) -> Expression:
        inside = set(district)
        events: list[CfEvent] = []
        for a in district:
            # ancestors of a inside the district
            anc = {a}
            stack = [a]
            while stack:
                n = stack.pop()
                for p in cg.parents[n]:
                    if p[0] != "=" and p in inside and p not in anc:
                        anc.add(p)
                        stack.append(p)
            sub: dict[str, Any] = {}
            for b in anc:
                for p in cg.parents[b]:
                    if p[0] == "=":
                        var, val = p[1], p[2]
                    elif p in inside:
                        continue
                    else:
                        var, val = p[0], values[p]
                    if var in sub and not _same(sub[var], val):
                        raise _StarFail(
                            CounterfactualWitness(
                                "conflict",
                                tuple(_label(n) for n in district),
                                (var, (sub[var], val)),
                            )
                        )
                    sub[var] = val
            world = tuple(sorted(sub.items(), key=lambda kv: kv[0]))
            events.append((a[0], world, values[a]))
        return self.id_star(events)

    def _single_district(self, cg: CounterfactualGraph, s: list[Node]) -> Expression:
        labels = tuple(_label(n) for n in s)
        # line 8: conflicts between subscripts, and between subscripts and events
        x: dict[str, Any] = {}
        for n in s:
            for var, val in n[1]:
                if var in x and not _same(x[var], val):
                    raise _StarFail(
                        CounterfactualWitness("conflict", labels, (var, (x[var], val)))
                    )
                x[var] = val
        seen_var: dict[str, Node] = {}
        for n in s:
            if n[0] in seen_var:
                a = cg.events.get(seen_var[n[0]], "?")
                b = cg.events.get(n, "?")
                raise _StarFail(
                    CounterfactualWitness(
                        "conflict",
                        labels,
                        (
                            n[0],
                            (f"{a} in {_label(seen_var[n[0]])}", f"{b} in {_label(n)}"),
                        ),
                        notes=("two copies of one variable in a district",),
                    )
                )
            seen_var[n[0]] = n
            if n in cg.events and n[0] in x and not _same(x[n[0]], cg.events[n]):
                raise _StarFail(
                    CounterfactualWitness(
                        "conflict", labels, (n[0], (x[n[0]], cg.events[n]))
                    )
                )
        # line 9: P_x(var(S)), identified from P(v) by ID
        outcomes = [n[0] for n in s if n in cg.events and n[0] not in x]
        if not outcomes:
            return Constant(1)
        engine = self.engine
        try:
            expr = engine.identify(outcomes, list(x))
        except _Fail as fail:
            f, fp, root = hedge_masks_to_names(self.graph, fail)
            treat = tuple(v for v in f if v in x)
            sub = ", ".join(f"{k}={v}" for k, v in x.items())
            context = f"P_{{{sub}}}({', '.join(outcomes)})"
            hedge = Hedge(f, fp, root, treat, context)
            raise _StarFail(
                CounterfactualWitness("hedge", labels, hedge=hedge)
            ) from None
        idx = self.graph._index
        syms = engine.syms
        mapping = {syms[idx[n[0]]]: cg.events[n] for n in s if n[0] in outcomes}
        mapping.update({syms[idx[k]]: v for k, v in x.items()})
        return expr.substitute(mapping)

    # ----------------------------------------------------------------- IDC*
    def idc_star(self, gamma: list[CfEvent], delta: list[CfEvent]) -> Expression:
        self.depth += 1
        try:
            return self._idc_star(self.prune(gamma), self.prune(delta))
        finally:
            self.depth -= 1

    def _idc_star(self, gamma: list[CfEvent], delta: list[CfEvent]) -> Expression:
        if not delta:
            return self.id_star(gamma)
        # line 1: an inconsistent δ has probability zero
        den_check = _trivially_zero(delta)
        if den_check:
            raise _Undefined(delta)
        try:
            make_cg(self.graph, [e for e in delta if e[0] not in dict(e[1])])
        except _Inconsistent:
            raise _Undefined(delta) from None
        # lines 2-3
        if _trivially_zero(gamma):
            return Constant(0)
        gamma = [e for e in gamma if e[0] not in dict(e[1])]
        delta = [e for e in delta if e[0] not in dict(e[1])]
        try:
            cg = make_cg(self.graph, gamma + delta)
        except _Inconsistent:
            return Constant(0)
        node_of = {ev: cg.find((ev[0], ev[1])) for ev in gamma + delta}
        g_nodes = [node_of[e] for e in gamma]
        d_nodes = [node_of[e] for e in delta]
        # events of γ that merged into δ nodes: P(γ|δ) checks their values
        new_gamma = []
        for e, n in zip(gamma, g_nodes):
            if n in d_nodes:
                if not _same(cg.events[n], e[2]):
                    return Constant(0)
                continue
            new_gamma.append((n[0], n[1], cg.events[n]))
        if not new_gamma:
            return Constant(1)
        g_nodes = [(v, w) for v, w, _ in new_gamma]
        new_delta = []
        for n in d_nodes:
            ev = (n[0], n[1], cg.events[n])
            if ev not in new_delta:
                new_delta.append(ev)
        # line 4
        admg = cg.to_admg()
        for ev in new_delta:
            d = (ev[0], ev[1])
            others = [_label((v, w)) for v, w, _ in new_delta if (v, w) != d]
            mut = admg.remove_outgoing([_label(d)])
            if not mut.m_separated(_label(d), [_label(n) for n in g_nodes], others):
                continue
            desc = admg.descendants(_label(d))

            def shift(
                events: list[CfEvent], d=d, ev=ev, desc=desc
            ) -> list[CfEvent] | None:
                out = []
                for v, w, val in events:
                    if _label((v, w)) in desc:
                        anc = admg.ancestors(_label((v, w)))
                        if any(
                            m[0] == d[0] and m != d and _label(m) in anc
                            for m in cg.nodes
                        ):
                            return None
                        wd = dict(w)
                        wd.setdefault(d[0], ev[2])
                        w = tuple(sorted(wd.items(), key=lambda kv: kv[0]))
                    out.append((v, w, val))
                return out

            moved = shift(new_gamma)
            rest = shift([e for e in new_delta if e != ev])
            if moved is None or rest is None:
                continue
            return self.idc_star(moved, rest)
        # line 5
        num = self.id_star(new_gamma + new_delta)
        den = self.id_star(new_delta)
        if isinstance(num, Constant) and num.value == 0:
            return num
        return Fraction(num, den)


class _Undefined(Exception):
    def __init__(self, delta: list[CfEvent]) -> None:
        super().__init__(delta)
        self.delta = delta


def _trivially_zero(events: list[CfEvent]) -> bool:
    return any(v in dict(w) and not _same(dict(w)[v], val) for v, w, val in events)


def _to_events(events) -> list[CfEvent]:
    return [(e.variable.name, e.variable.interventions, e.value) for e in events]


def identify_counterfactual(graph: ADMG, query: CounterfactualQuery):
    """Run ID* (or IDC* when the query has evidence) and wrap the result.

    :param graph: the causal diagram.
    :param query: the counterfactual query.
    :returns: an :class:`~pyro_causalgen.identify.IdentificationResult`.

    >>> from pyro_causalgen.identify import parse_query
    >>> g = ADMG.from_string("Z -> X -> Y; Z -> Y")
    >>> r = identify_counterfactual(g, parse_query("P(Y_{X=1}=1 | X=0)"))
    >>> print(r.estimand)
    (Σ_{Z'} P(Z') P(X=0 | Z') P(Y=1 | Z', X=1)) / (Σ_{Z''} P(Z'') P(X=0 | Z''))
    """
    from pyro_causalgen.identify.api import IdentificationResult
    from pyro_causalgen.identify.errors import InconsistentEvidenceError

    run = _Run(graph)
    gamma, delta = _to_events(query.events), _to_events(query.evidence)
    algorithm = "IDC*" if delta else "ID*"
    try:
        expr = run.idc_star(gamma, delta) if delta else run.id_star(gamma)
    except _StarFail as fail:
        w = fail.witness
        w = CounterfactualWitness(
            w.reason, w.district, w.conflict, w.hedge, str(query), w.notes
        )
        return IdentificationResult(query, graph, None, w, algorithm)
    except _Undefined as und:
        shown = ", ".join(str(Variable(v, w).equals(val)) for v, w, val in und.delta)
        raise InconsistentEvidenceError(
            f"{query} is undefined: the evidence ({shown}) is inconsistent and has "
            "probability zero"
        ) from None
    expr = rename_bound(expr)
    return IdentificationResult(
        query, graph, Estimand(expr, query, ()), None, algorithm
    )


__all__ = ["CounterfactualGraph", "identify_counterfactual", "make_cg"]
