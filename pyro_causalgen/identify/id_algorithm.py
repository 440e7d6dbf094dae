"""The ID algorithm (Shpitser & Pearl, 2006, "Identification of joint interventional
distributions in recursive semi-Markovian causal models", AAAI, Fig. 3).

::

    function ID(y, x, P, G)
    1  if x = ∅, return Σ_{v \\ y} P(v)
    2  if V ≠ An(Y)_G, return ID(y, x ∩ An(Y)_G, Σ_{v \\ An(Y)_G} P, G_{An(Y)})
    3  let W = (V \\ X) \\ An(Y)_{G_{\\bar X}}; if W ≠ ∅, return ID(y, x ∪ w, P, G)
    4  if C(G \\ X) = {S_1, ..., S_k},
           return Σ_{v \\ (y ∪ x)} Π_i ID(s_i, v \\ s_i, P, G)
       if C(G \\ X) = {S},
    5    if C(G) = {G}, throw FAIL(G, G ∩ S)
    6    if S ∈ C(G), return Σ_{s \\ y} Π_{V_i ∈ S} P(v_i | v_π^{(i-1)})
    7    if (∃S') S ⊂ S' ∈ C(G),
             return ID(y, x ∩ S',
                       Π_{V_i ∈ S'} P(V_i | V_π^{(i-1)} ∩ S', v_π^{(i-1)} \\ S'),
                       G_{S'})

Representation.  Nodes are bits of an ``int`` numbered in one topological order π
of the input graph (every induced subgraph inherits it).  The distribution ``P`` of
a recursive call is always ``Q[H]`` for the call's node set ``H`` (Tian & Pearl,
2002): the input ``P(v)`` (``_BASE``), a product of conditionals made at line 7
(``_PRODUCT``), or a marginal made at line 2 (``_MARGINAL``).  Lines 6 and 7 need
the conditionals ``Q[H](v_i | v_π^{(i-1)} ∩ H)``; :meth:`_Dist.cond` returns them:

* for ``P(v)`` itself, ``P(v_i | v_π^{(i-1)})`` equals
  ``P(v_i | (T_i ∪ Pa(T_i)) \\ {v_i})`` with ``T_i`` the district of ``v_i`` in
  ``G_{V_π^{(≤i)}}`` (Tian & Pearl, 2002, Lemma 1); we print the short form;
* for a line-7 product, the factor for ``v_i`` (later factors sum to one);
* for a line-2 marginal of ``P(v)`` (possibly after earlier line-2 marginals),
  ``Q[A] = P(a)`` for the ancestral ``A``, and ``P(a)`` factorises along ``G_A``;
  Lemma 1 applied to it gives ``P(v_i | (T_i ∪ Pa(T_i)) \\ {v_i})`` with ``T_i``
  the district of ``v_i`` in ``G_{V_π^{(≤i)} ∩ A}``: the same short form, with
  no sum in it;
* for a line-2 marginal ``Σ_{H \\ A} Q[H]`` of a line-7 product, the ratio
  ``Σ_W Π_{j ≤ i} c_j / Σ_W Π_{j < i} c_j`` over the summed predecessors ``W``,
  keeping only the factors that touch ``W`` (the others cancel); when the factor of
  ``v_i`` touches no summed variable it is the factor itself.

Conditionals are :class:`Probability` terms stored as bit masks
(:meth:`Probability.from_masks`): their pairs and text are built only when read,
so the quadratic size of estimands such as the Verma chain's costs little until
printed, and printing renders each mask from cached 64-variable chunks.

Trailing sums of normalised conditionals (``Σ_v P(v | ...) = 1`` when nothing else
reads ``v``) are dropped.  The tail calls of lines 2, 3 and 7 are a loop, so
recursion depth is the nesting of line 4 only.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyro_causalgen.graph._bits import iter_bits
from pyro_causalgen.graph.admg import ADMG
from pyro_causalgen.identify.estimand import (
    Constant,
    Expression,
    Fraction,
    Probability,
    Product,
    Sum,
    VariableTable,
    rename_bound,
)
from pyro_causalgen.identify.query import Symbol

_BASE, _PRODUCT, _MARGINAL = 0, 1, 2


class _Fail(Exception):
    """Line 5 of ID: ``FAIL(G, G ∩ S)`` with node masks ``f`` and ``f_prime``."""

    def __init__(self, f: int, f_prime: int) -> None:
        super().__init__(f, f_prime)
        self.f = f
        self.f_prime = f_prime


class _Factor:
    """An expression with its scope (mask of variables it reads) and, when it is a
    normalised conditional of one variable, that variable (``head``; else -1)."""

    __slots__ = ("expr", "scope", "head")

    def __init__(self, expr: Expression, scope: int, head: int = -1) -> None:
        self.expr = expr
        self.scope = scope
        self.head = head


_ONE = _Factor(Constant(1), 0, -1)


def sum_product(factors: list[_Factor], over: int, syms: Sequence[Symbol]) -> _Factor:
    """``Σ_over Π factors`` with normalised trailing conditionals summed out."""
    alive = list(factors)
    if over:
        # A factor's scope only holds variables at or before its head (topological
        # numbering), so in decreasing head order a summed head read by no factor
        # kept so far is read by no other factor at all.
        kept: list[_Factor] = []
        union = 0
        for f in alive:
            if f.head < 0:
                union |= f.scope
        for f in sorted((f for f in alive if f.head >= 0), key=lambda f: -f.head):
            h = f.head
            if over >> h & 1 and not union >> h & 1:
                over &= ~(1 << h)
            else:
                union |= f.scope
                kept.append(f)
        alive = [f for f in alive if f.head < 0] + kept[::-1]
        alive.sort(key=lambda f: f.head if f.head >= 0 else 1 << 30)
    scope = 0
    for f in alive:
        scope |= f.scope
    over &= scope
    if not alive:
        return _ONE
    if len(alive) == 1:
        body = alive[0].expr
        head = alive[0].head if not over else -1
    else:
        body = Product([f.expr for f in alive])
        head = -1
    if over:
        body = Sum(body, [syms[i] for i in iter_bits(over)])
    return _Factor(body, scope & ~over, head)


class _Dist:
    """``Q[H]`` of a recursive call: node mask ``mask`` and how it was made."""

    __slots__ = (
        "engine",
        "mask",
        "kind",
        "parent",
        "factors",
        "cache",
        "readers",
        "base_rooted",
    )

    def __init__(
        self, engine: IDEngine, mask: int, kind: int, parent=None, factors=None
    ):
        self.engine = engine
        self.mask = mask
        self.kind = kind
        self.parent: _Dist | None = parent
        self.factors: dict[int, _Factor] | None = factors
        self.cache: dict[int, _Factor] = {}
        self.readers: dict[int, int] | None = None
        # a chain of line-2 marginals over the input P(v): Q[H] = P(h)
        self.base_rooted: bool = kind == _BASE or (
            kind == _MARGINAL and parent is not None and parent.base_rooted
        )

    def _readers(self, below: int) -> dict[int, int]:
        """For a line-2 marginal: summed variable -> mask of parent factors (under
        ``below``) reading it; extended lazily, only when a conditional needs the
        ratio form."""
        if self.readers is None:
            self.readers = {}
            self.cache[-1] = _Factor(Constant(0), 0)  # scope = mask of indexed j
        done = self.cache[-1]
        todo = self.parent.mask & below & ~done.scope  # type: ignore[union-attr]
        if todo:
            parent = self.parent
            assert parent is not None
            summed = parent.mask & ~self.mask
            readers = self.readers
            for j in iter_bits(todo):
                for w in iter_bits(parent.cond(j).scope & summed & ~(1 << j)):
                    readers[w] = readers.get(w, 0) | 1 << j
            done.scope |= todo
        return self.readers

    def marginal(self, keep: int) -> _Dist:
        """Line 2: ``Σ_{H \\ keep} Q[H]`` for an ancestral ``keep``."""
        return _Dist(self.engine, keep, _MARGINAL, parent=self)

    def product(self, district: int) -> _Dist:
        """Line 7: ``Π_{V_i ∈ S'} Q[H](v_i | v_π^{(i-1)})``."""
        return _Dist(
            self.engine,
            district,
            _PRODUCT,
            factors={i: self.cond(i) for i in iter_bits(district)},
        )

    def cond(self, i: int) -> _Factor:
        """``Q[H](v_i | v_π^{(i-1)} ∩ H)`` with the outside values held fixed."""
        if self.kind == _BASE:
            return self.engine.base_cond(i)
        if self.kind == _PRODUCT:
            return self.factors[i]  # type: ignore[index]
        hit = self.cache.get(i)
        if hit is not None:
            return hit
        parent = self.parent
        assert parent is not None
        if self.base_rooted:
            # Σ_{V \ A} P(v) = P(a) for the ancestral A: its own short form
            out = self.engine.base_cond(i, self.mask)
            self.cache[i] = out
            return out
        c = parent.cond(i)
        below = (1 << i) - 1
        summed = parent.mask & ~self.mask & below
        if not c.scope & summed:
            out = c
        else:
            syms = self.engine.syms
            readers = self._readers(below)
            wr = c.scope & summed
            taken = 0
            frontier = wr
            while frontier:
                new = 0
                for w in iter_bits(frontier):
                    new |= (readers.get(w, 0) | 1 << w) & below
                new &= ~taken
                taken |= new
                grow = 0
                for j in iter_bits(new):
                    grow |= parent.cond(j).scope & summed
                frontier = grow & ~wr
                wr |= grow
            chosen = [parent.cond(j) for j in iter_bits(taken)]
            num = sum_product(chosen + [c], wr, syms)
            den = sum_product(chosen, wr, syms)
            expr = num.expr if den is _ONE else Fraction(num.expr, den.expr)
            out = _Factor(expr, num.scope | den.scope, i)
        self.cache[i] = out
        return out


class IDEngine:
    """Runs ID / IDC on one graph; caches the input's conditionals.

    :param graph: the causal diagram.

    >>> eng = IDEngine(ADMG.from_string("X -> M -> Y; X <-> Y"))
    >>> print(eng.identify({"Y"}, {"X"}))
    Σ_{M} P(M | X) [Σ_{X} P(X) P(Y | X, M)]
    """

    def __init__(self, graph: ADMG) -> None:
        self.graph = graph
        self.names = graph._names
        self.table = VariableTable(self.names)
        self.syms: Sequence[Symbol] = self.table.syms
        self.base = _Dist(self, graph._full, _BASE)
        self._base_cond: dict[tuple[int, int], _Factor] = {}
        # ancestral set -> (T_i ∪ Pa(T_i), T_i) per node, built by union-find
        self._prefix: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
        self._requests: dict[int, int] = {}

    def _prefix_districts(self, within: int) -> tuple[dict[int, int], dict[int, int]]:
        """``T_i ∪ Pa(T_i)`` and ``T_i`` for every ``i`` in the ancestral set
        ``within``, with ``T_i`` the district of ``v_i`` in
        ``G_{V_π^{(≤i)} ∩ within}``: the prefix's districts are kept as masks and
        merged one node at a time."""
        g = self.graph
        pa, sib = g._pa, g._sib
        root: dict[int, int] = {}
        comp_scope: dict[int, int] = {}  # root -> T ∪ Pa(T) of its component
        comp_nodes: dict[int, int] = {}  # root -> T

        def find(a: int) -> int:
            while root[a] != a:
                root[a] = root[root[a]]
                a = root[a]
            return a

        scopes: dict[int, int] = {}
        districts: dict[int, int] = {}
        for i in iter_bits(within):
            root[i] = i
            scope = (1 << i) | (pa[i] & within)
            nodes = 1 << i
            near = sib[i] & within & ((1 << i) - 1)
            if near:
                if near.bit_count() <= len(comp_nodes):
                    hit = {find(j) for j in iter_bits(near)}
                else:  # dense siblings: test the few open components instead
                    hit = {r for r, c in comp_nodes.items() if c & near}
                for r in hit:
                    scope |= comp_scope.pop(r)
                    nodes |= comp_nodes.pop(r)
                    root[r] = i
            comp_scope[i] = scopes[i] = scope
            comp_nodes[i] = districts[i] = nodes
        return scopes, districts

    def _prefix_table(self, within: int) -> tuple[dict[int, int], dict[int, int]]:
        table = self._prefix.get(within)
        if table is None:
            table = self._prefix[within] = self._prefix_districts(within)
        return table

    # ------------------------------------------------------------------ helpers
    def mask(self, names) -> int:
        return self.graph._mask(names)

    def _prefix_scope(self, i: int, within: int) -> int:
        """``T_i ∪ Pa(T_i)`` for ``v_i`` in the ancestral set ``within``: a search
        over bidirected edges for a few nodes; an ancestral set asked for many
        nodes gets its own table."""
        table = self._prefix.get(within)
        if table is not None or within == self.graph._full:
            return self._prefix_table(within)[0][i]
        count = self._requests[within] = self._requests.get(within, 0) + 1
        if count > 16:
            return self._prefix_table(within)[0][i]
        t = self.graph._district_mask(1 << i, within & ((2 << i) - 1))
        pa = self.graph._pa
        scope = t
        for j in iter_bits(t):
            scope |= pa[j]
        return scope & within

    def base_cond(self, i: int, within: int | None = None) -> _Factor:
        """``P(v_i | v_π^{(i-1)} ∩ A) = P(v_i | (T_i ∪ Pa(T_i)) \\ {v_i})`` for an
        ancestral set ``A`` (``within``; the whole graph by default), with ``T_i``
        the district of ``v_i`` in ``G_{V_π^{(≤i)} ∩ A}`` (Tian & Pearl 2002,
        Lemma 1, applied to ``P(a)``, which factorises along ``G_A`` because ``A``
        is ancestral)."""
        if within is None:
            within = self.graph._full
        key = (within, i)
        hit = self._base_cond.get(key)
        if hit is not None:
            return hit
        scope = self._prefix_scope(i, within)
        expr = Probability.from_masks(self.table, 1 << i, scope & ~(1 << i))
        out = _Factor(expr, scope, i)
        self._base_cond[key] = out
        return out

    def _joint_sum(self, dist: _Dist, y: int) -> _Factor:
        """Line 1: ``Σ_{v \\ y} P(v)`` for the current ``P``."""
        root = dist
        while root.kind == _MARGINAL:
            root = root.parent  # type: ignore[assignment]
        if root.kind == _BASE:
            expr = Probability.from_masks(self.table, y)
            return _Factor(expr, y, y.bit_length() - 1 if y & (y - 1) == 0 else -1)
        factors = [root.factors[j] for j in iter_bits(root.mask)]  # type: ignore[index]
        return sum_product(factors, root.mask & ~y, self.syms)

    def _ancestors_no_in(self, y: int, x: int, within: int) -> int:
        """``An(Y)`` in ``G_{\\bar X}`` restricted to ``within``."""
        pa = self.graph._pa
        seen = y & within
        frontier = seen
        while frontier:
            new = 0
            for i in iter_bits(frontier & ~x):
                new |= pa[i]
            new &= within & ~seen
            seen |= new
            frontier = new
        return seen

    # -------------------------------------------------------------------- ID
    def run_id(
        self, y: int, x: int, dist: _Dist, g: int, anc_hint: int | None = None
    ) -> _Factor:
        """ID(y, x, P, G) on node masks; raises :class:`_Fail` at line 5."""
        graph = self.graph
        while True:
            # line 1: no intervention left
            if not x:
                return self._joint_sum(dist, y)
            # line 2: drop non-ancestors of Y
            if anc_hint is not None:
                an, anc_hint = anc_hint, None
            else:
                an = graph._ancestors_mask(y, g)
            if an != g:
                x &= an
                dist = dist.marginal(an)
                g = an
                anc_hint = an  # An(Y) within G_{An(Y)} is An(Y) itself
                continue
            # line 3: intervene on W = (V \ X) \ An(Y)_{G_{\bar X}}
            rest = g & ~x
            if rest & ~y:
                w = rest & ~self._ancestors_no_in(y, x, g)
                if w:
                    x |= w
                    continue
            # line 4: districts of G \ X
            comps = graph._districts_mask(g & ~x)
            if len(comps) > 1:
                table: dict[int, int] = {}
                pa = graph._pa
                for i in iter_bits(g):
                    m = 1 << i
                    for p in iter_bits(pa[i] & g):
                        m |= table[p]
                    table[i] = m
                subs = []
                for s in comps:
                    a = 0
                    for i in iter_bits(s):
                        a |= table[i]
                    subs.append(self.run_id(s, g & ~s, dist, g, anc_hint=a))
                return sum_product(subs, g & ~(y | x), self.syms)
            s = comps[0]
            district = graph._district_mask(s, g)
            # line 5: G is a single district -> hedge (G, G ∩ S)
            if district == g:
                raise _Fail(g, s)
            # line 6: S is a district of G
            if district == s:
                return sum_product(
                    [dist.cond(i) for i in iter_bits(s)], s & ~y, self.syms
                )
            # line 7: S inside the larger district S'
            x &= district
            dist = dist.product(district)
            g = district

    def identify(self, outcomes, treatments) -> Expression:
        """``P(outcomes | do(treatments))`` as an expression; raises :class:`_Fail`.

        >>> eng = IDEngine(ADMG.from_string("Z -> X -> Y; Z -> Y"))
        >>> print(eng.identify(["Y"], ["X"]))
        Σ_{Z} P(Z) P(Y | Z, X)
        """
        y, x = self.mask(outcomes), self.mask(treatments)
        return self.run_id(y, x, self.base, self.graph._full).expr

    # ------------------------------------------------------------------- IDC
    def idc_reduce(self, y: int, x: int, z: int) -> tuple[int, int]:
        """Line 1 of IDC: move each ``Z`` with ``(Y ⊥ Z | X, Z \\ {Z})`` in
        ``G_{\\bar X, \\underline Z}`` from the conditions to the treatments."""
        graph = self.graph
        changed = True
        while z and changed:
            changed = False
            for zi in iter_bits(z):
                bit = 1 << zi
                if not graph._m_connected(bit, y, x | (z & ~bit), no_in=x, no_out=bit):
                    x |= bit
                    z &= ~bit
                    changed = True
                    break
        return x, z

    def identify_conditional(self, outcomes, treatments, conditions) -> Expression:
        """IDC (Shpitser & Pearl, 2006b, Fig. 4) on names; raises :class:`_Fail`.

        >>> eng = IDEngine(ADMG.from_string("X -> Y -> Z"))
        >>> print(eng.identify_conditional(["Y"], ["X"], ["Z"]))
        (P(Y | X) P(Z | Y)) / (Σ_{Y'} P(Y' | X) P(Z | Y'))
        """
        y, x, z = self.mask(outcomes), self.mask(treatments), self.mask(conditions)
        return self.run_idc(y, x, z)

    def run_idc(self, y: int, x: int, z: int) -> Expression:
        # line 1 (applied until no Z qualifies)
        x, z = self.idc_reduce(y, x, z)
        if not z:
            return self.run_id(y, x, self.base, self.graph._full).expr
        # line 2: P' = ID(y ∪ z, x, P, G); return P' / Σ_y P'
        p = self.run_id(y | z, x, self.base, self.graph._full)
        den = sum_product([p], y, self.syms)
        return rename_bound(Fraction(p.expr, den.expr))


def hedge_masks_to_names(graph: ADMG, fail: _Fail) -> tuple[tuple[str, ...], ...]:
    """``(F, F', R)`` as name tuples for a line-5 failure."""
    fp = fail.f_prime
    root = 0
    for i in iter_bits(fp):
        if not graph._ch[i] & fp:
            root |= 1 << i
    return graph._ordered(fail.f), graph._ordered(fp), graph._ordered(root)


__all__ = ["IDEngine", "sum_product"]
