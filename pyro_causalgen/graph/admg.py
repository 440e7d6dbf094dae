"""Acyclic directed mixed graphs (ADMGs): directed edges plus bidirected edges.

A bidirected edge ``X <-> Y`` stands for an unobserved common cause of ``X`` and
``Y`` (Richardson & Spirtes, 2002; Tian & Pearl, 2002).  Internally every node is a
bit of a Python ``int`` and nodes are numbered in a topological order, so that
ancestors, districts and m-separation are bit-set operations; networkx is used for
export and to name a cycle in an error.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable

import networkx as nx

from pyro_causalgen.graph._bits import iter_bits
from pyro_causalgen.graph.errors import (
    CycleError,
    GraphError,
    GraphSyntaxError,
    SelfLoopError,
    UnknownNodeError,
)

Edge = tuple[str, str]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\[\]']*$")
_ARROWS = re.compile(r"(<->|->|<-)")


def _as_names(nodes: str | Iterable[str]) -> list[str]:
    if isinstance(nodes, str):
        return [nodes]
    return list(nodes)


class ADMG:
    """An acyclic directed mixed graph with named nodes.

    :param directed: directed edges ``(parent, child)``.
    :param bidirected: bidirected edges ``(a, b)``; order within a pair is ignored.
    :param nodes: extra (possibly isolated) nodes; nodes keep the order in which
        they are first mentioned, ``nodes`` first.
    :raises SelfLoopError: if an edge joins a node to itself.
    :raises CycleError: if the directed edges contain a cycle (the cycle is named).

    >>> g = ADMG([("Z", "X"), ("X", "Y")], [("X", "Y")])
    >>> sorted(g.parents("Y")), sorted(g.siblings("X"))
    (['X'], ['Y'])
    >>> print(g)
    Z -> X; X -> Y; X <-> Y
    """

    __slots__ = (
        "_nodes",
        "_names",
        "_index",
        "_pa",
        "_ch",
        "_sib",
        "_directed",
        "_bidirected",
        "_anc_cache",
        "_hash",
    )

    def __init__(
        self,
        directed: Iterable[Edge] = (),
        bidirected: Iterable[Edge] = (),
        nodes: Iterable[str] = (),
    ) -> None:
        order: dict[str, None] = {}
        for v in nodes:
            order.setdefault(self._check_name(v), None)
        d_edges: dict[Edge, None] = {}
        for a, b in directed:
            self._check_name(a), self._check_name(b)
            if a == b:
                raise SelfLoopError(f"self-loop on node {a!r} ({a} -> {a})")
            order.setdefault(a, None)
            order.setdefault(b, None)
            d_edges.setdefault((a, b), None)
        b_edges: dict[Edge, None] = {}
        for a, b in bidirected:
            self._check_name(a), self._check_name(b)
            if a == b:
                raise SelfLoopError(f"self-loop on node {a!r} ({a} <-> {a})")
            order.setdefault(a, None)
            order.setdefault(b, None)
            if (b, a) not in b_edges:
                b_edges.setdefault((a, b), None)
        self._nodes: tuple[str, ...] = tuple(order)
        self._directed: tuple[Edge, ...] = tuple(d_edges)
        self._bidirected: tuple[Edge, ...] = tuple(b_edges)
        self._compile()
        self._anc_cache: list[int] | None = None
        self._hash: int | None = None

    @staticmethod
    def _check_name(v: object) -> str:
        if not isinstance(v, str) or not v:
            raise GraphSyntaxError(f"node names must be non-empty strings, got {v!r}")
        return v

    def _compile(self) -> None:
        """Number nodes topologically (Kahn's algorithm, ties by first mention)."""
        first = {v: i for i, v in enumerate(self._nodes)}
        children: dict[str, list[str]] = {v: [] for v in self._nodes}
        indeg = dict.fromkeys(self._nodes, 0)
        for a, b in self._directed:
            children[a].append(b)
            indeg[b] += 1
        heap = [first[v] for v in self._nodes if indeg[v] == 0]
        heapq.heapify(heap)
        names: list[str] = []
        while heap:
            v = self._nodes[heapq.heappop(heap)]
            names.append(v)
            for c in children[v]:
                indeg[c] -= 1
                if indeg[c] == 0:
                    heapq.heappush(heap, first[c])
        if len(names) < len(self._nodes):
            rest = [v for v in self._nodes if indeg[v] > 0]
            sub = nx.DiGraph([(a, b) for a, b in self._directed if a in rest])
            cycle = nx.find_cycle(sub)
            path = " -> ".join([a for a, _ in cycle] + [cycle[0][0]])
            raise CycleError(f"directed edges form a cycle: {path}")
        self._names: tuple[str, ...] = tuple(names)
        self._index: dict[str, int] = {v: i for i, v in enumerate(names)}
        n = len(names)
        pa = [0] * n
        ch = [0] * n
        sib = [0] * n
        idx = self._index
        for a, b in self._directed:
            i, j = idx[a], idx[b]
            pa[j] |= 1 << i
            ch[i] |= 1 << j
        for a, b in self._bidirected:
            i, j = idx[a], idx[b]
            sib[i] |= 1 << j
            sib[j] |= 1 << i
        self._pa, self._ch, self._sib = pa, ch, sib

    # ------------------------------------------------------------------ building
    @classmethod
    def from_string(cls, text: str) -> ADMG:
        """Parse a compact description such as ``"X -> Y; Z -> X; X <-> Y"``.

        Statements are separated by ``;`` or new lines.  A statement is a chain of
        node groups joined by ``->``, ``<-`` or ``<->``; a group is one name or
        several separated by commas (``"A, B -> C"`` adds ``A -> C`` and
        ``B -> C``).  A statement that is a lone name adds an isolated node.

        :param text: the description.
        :returns: the graph.
        :raises GraphSyntaxError: naming the statement that cannot be parsed.

        >>> g = ADMG.from_string("Z -> X -> Y; X <-> Y; W")
        >>> g.nodes
        ('Z', 'X', 'Y', 'W')
        """
        if not isinstance(text, str):
            raise GraphSyntaxError(f"expected a string, got {type(text).__name__}")
        directed: list[Edge] = []
        bidirected: list[Edge] = []
        nodes: list[str] = []
        for raw in re.split(r"[;\n]", text):
            stmt = raw.strip()
            if not stmt or stmt.startswith("#"):
                continue
            parts = [p.strip() for p in _ARROWS.split(stmt)]
            groups: list[list[str]] = []
            for k, part in enumerate(parts[::2]):
                names = [s.strip() for s in part.split(",")] if part else []
                if not names or any(not s for s in names):
                    where = "before" if k == 0 else "after"
                    arrow = parts[1] if k == 0 else parts[2 * k - 1]
                    raise GraphSyntaxError(
                        f"cannot parse graph statement {stmt!r}: missing node name "
                        f"{where} {arrow!r}"
                    )
                for s in names:
                    if not _NAME.match(s):
                        raise GraphSyntaxError(
                            f"cannot parse graph statement {stmt!r}: {s!r} is not a "
                            "node name"
                        )
                groups.append(names)
                nodes.extend(names)
            for k, arrow in enumerate(parts[1::2]):
                left, right = groups[k], groups[k + 1]
                for a in left:
                    for b in right:
                        if arrow == "->":
                            directed.append((a, b))
                        elif arrow == "<-":
                            directed.append((b, a))
                        else:
                            bidirected.append((a, b))
        return cls(directed, bidirected, nodes)

    @classmethod
    def coerce(cls, graph: ADMG | str) -> ADMG:
        """Return ``graph`` itself, or parse it if it is a string.

        :param graph: an :class:`ADMG` or a compact description.
        :returns: the graph.

        >>> ADMG.coerce("X -> Y").nodes
        ('X', 'Y')
        """
        if isinstance(graph, ADMG):
            return graph
        if isinstance(graph, str):
            return cls.from_string(graph)
        raise TypeError(f"expected an ADMG or a graph string, got {type(graph)!r}")

    # --------------------------------------------------------------- basic views
    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names in order of first mention.

        >>> ADMG.from_string("Y <- X").nodes
        ('Y', 'X')
        """
        return self._nodes

    @property
    def directed_edges(self) -> tuple[Edge, ...]:
        """Directed edges ``(parent, child)`` in order of first mention.

        >>> ADMG.from_string("X -> Y <- Z").directed_edges
        (('X', 'Y'), ('Z', 'Y'))
        """
        return self._directed

    @property
    def bidirected_edges(self) -> tuple[Edge, ...]:
        """Bidirected edges, each once, in order of first mention.

        >>> ADMG.from_string("X <-> Y; Y <-> X").bidirected_edges
        (('X', 'Y'),)
        """
        return self._bidirected

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._index

    def __iter__(self):
        return iter(self._nodes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ADMG):
            return NotImplemented
        return (
            set(self._nodes) == set(other._nodes)
            and set(self._directed) == set(other._directed)
            and {frozenset(e) for e in self._bidirected}
            == {frozenset(e) for e in other._bidirected}
        )

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(
                (
                    frozenset(self._nodes),
                    frozenset(self._directed),
                    frozenset(frozenset(e) for e in self._bidirected),
                )
            )
        return self._hash

    def __str__(self) -> str:
        parts = [f"{a} -> {b}" for a, b in self._directed]
        parts += [f"{a} <-> {b}" for a, b in self._bidirected]
        touched = {v for e in self._directed + self._bidirected for v in e}
        parts += [v for v in self._nodes if v not in touched]
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"ADMG.from_string({str(self)!r})"

    # ------------------------------------------------------------- bit helpers
    def _bit(self, node: str) -> int:
        try:
            return self._index[node]
        except (KeyError, TypeError):
            shown = ", ".join(self._nodes) if len(self._nodes) <= 20 else "..."
            raise UnknownNodeError(
                f"unknown node {node!r}; the graph has nodes {shown}"
            ) from None

    def _mask(self, nodes: str | Iterable[str]) -> int:
        m = 0
        for v in _as_names(nodes):
            m |= 1 << self._bit(v)
        return m

    def _unmask(self, mask: int) -> frozenset[str]:
        names = self._names
        return frozenset(names[i] for i in iter_bits(mask))

    def _ordered(self, mask: int) -> tuple[str, ...]:
        names = self._names
        return tuple(names[i] for i in iter_bits(mask))

    @property
    def _full(self) -> int:
        return (1 << len(self._names)) - 1

    def _ancestor_table(self) -> list[int]:
        """``table[i]`` = bit set of the ancestors of node ``i``, itself included."""
        if self._anc_cache is None:
            table = [0] * len(self._names)
            pa = self._pa
            for i in range(len(self._names)):
                m = 1 << i
                for p in iter_bits(pa[i]):
                    m |= table[p]
                table[i] = m
            self._anc_cache = table
        return self._anc_cache

    def _ancestors_mask(self, mask: int, within: int | None = None) -> int:
        """Ancestors of ``mask`` (inclusive) in the subgraph induced by ``within``."""
        if within is None:
            table = self._ancestor_table()
            out = 0
            for i in iter_bits(mask):
                out |= table[i]
            return out
        pa = self._pa
        seen = mask & within
        frontier = seen
        while frontier:
            new = 0
            for i in iter_bits(frontier):
                new |= pa[i]
            new &= within & ~seen
            seen |= new
            frontier = new
        return seen

    def _descendants_mask(self, mask: int, within: int | None = None) -> int:
        if within is None:
            within = self._full
        ch = self._ch
        seen = mask & within
        frontier = seen
        while frontier:
            new = 0
            for i in iter_bits(frontier):
                new |= ch[i]
            new &= within & ~seen
            seen |= new
            frontier = new
        return seen

    def _district_mask(self, mask: int, within: int) -> int:
        """The union of the districts of ``within`` that meet ``mask``."""
        sib = self._sib
        seen = mask & within
        frontier = seen
        while frontier:
            new = 0
            for i in iter_bits(frontier):
                new |= sib[i]
            new &= within & ~seen
            seen |= new
            frontier = new
        return seen

    def _districts_mask(self, within: int) -> list[int]:
        out = []
        rest = within
        while rest:
            low = rest & -rest
            d = self._district_mask(low, within)
            out.append(d)
            rest &= ~d
        return out

    # ---------------------------------------------------------------- relations
    def parents(self, node: str) -> frozenset[str]:
        """Parents of ``node`` (tails of directed edges into it).

        :raises UnknownNodeError: if ``node`` is not in the graph.

        >>> sorted(ADMG.from_string("A -> C; B -> C").parents("C"))
        ['A', 'B']
        """
        return self._unmask(self._pa[self._bit(node)])

    def children(self, node: str) -> frozenset[str]:
        """Children of ``node``.

        >>> sorted(ADMG.from_string("A -> B; A -> C").children("A"))
        ['B', 'C']
        """
        return self._unmask(self._ch[self._bit(node)])

    def siblings(self, node: str) -> frozenset[str]:
        """Nodes joined to ``node`` by a bidirected edge.

        >>> sorted(ADMG.from_string("A <-> B; C <-> A").siblings("A"))
        ['B', 'C']
        """
        return self._unmask(self._sib[self._bit(node)])

    def ancestors(
        self, nodes: str | Iterable[str], include_self: bool = True
    ) -> frozenset[str]:
        """Ancestors of a node or a set of nodes.

        Following Shpitser & Pearl (2006) a node counts as its own ancestor unless
        ``include_self`` is false (then the given nodes are left out).

        :param nodes: a node name or an iterable of names.
        :param include_self: whether the given nodes are part of the answer.

        >>> sorted(ADMG.from_string("A -> B -> C; D -> C").ancestors("B"))
        ['A', 'B']
        """
        m = self._mask(nodes)
        out = self._ancestors_mask(m)
        return self._unmask(out if include_self else out & ~m)

    def descendants(
        self, nodes: str | Iterable[str], include_self: bool = True
    ) -> frozenset[str]:
        """Descendants of a node or a set of nodes (inclusive by default).

        >>> sorted(ADMG.from_string("A -> B -> C; D -> C").descendants("B"))
        ['B', 'C']
        """
        m = self._mask(nodes)
        out = self._descendants_mask(m)
        return self._unmask(out if include_self else out & ~m)

    def topological_order(self) -> tuple[str, ...]:
        """A topological order of the directed part (ties broken by first mention).

        >>> ADMG.from_string("Y <- X; X <- Z").topological_order()
        ('Z', 'X', 'Y')
        """
        return self._names

    def subgraph(self, nodes: Iterable[str]) -> ADMG:
        """The subgraph induced by ``nodes`` (edges with both ends in ``nodes``).

        >>> print(ADMG.from_string("A -> B -> C; A <-> C").subgraph(["A", "C"]))
        A <-> C
        """
        keep = self._unmask(self._mask(nodes))
        return ADMG(
            [(a, b) for a, b in self._directed if a in keep and b in keep],
            [(a, b) for a, b in self._bidirected if a in keep and b in keep],
            [v for v in self._nodes if v in keep],
        )

    def remove_incoming(self, nodes: Iterable[str]) -> ADMG:
        """The mutilated graph :math:`G_{\\overline{X}}`: no edge has a head at ``X``.

        Directed edges into ``X`` and bidirected edges touching ``X`` are removed.

        >>> print(ADMG.from_string("Z -> X -> Y; X <-> Y").remove_incoming(["X"]))
        X -> Y; Z
        """
        drop = self._unmask(self._mask(nodes))
        return ADMG(
            [(a, b) for a, b in self._directed if b not in drop],
            [(a, b) for a, b in self._bidirected if a not in drop and b not in drop],
            self._nodes,
        )

    def remove_outgoing(self, nodes: Iterable[str]) -> ADMG:
        """The mutilated graph :math:`G_{\\underline{X}}`: directed edges out of X go.

        >>> print(ADMG.from_string("Z -> X -> Y; X <-> Y").remove_outgoing(["X"]))
        Z -> X; X <-> Y
        """
        drop = self._unmask(self._mask(nodes))
        return ADMG(
            [(a, b) for a, b in self._directed if a not in drop],
            self._bidirected,
            self._nodes,
        )

    def districts(self) -> list[frozenset[str]]:
        """The districts (c-components): classes of nodes joined by bidirected paths.

        Districts are listed in topological order of their first node.

        >>> [sorted(d) for d in ADMG.from_string("X -> M -> Y; X <-> Y").districts()]
        [['X', 'Y'], ['M']]
        """
        return [self._unmask(d) for d in self._districts_mask(self._full)]

    c_components = districts

    def district(self, node: str) -> frozenset[str]:
        """The district (c-component) that contains ``node``.

        >>> sorted(ADMG.from_string("A <-> B <-> C; D").district("A"))
        ['A', 'B', 'C']
        """
        return self._unmask(self._district_mask(1 << self._bit(node), self._full))

    # -------------------------------------------------------------- separation
    def _m_connected(
        self,
        source: int,
        target: int,
        given: int,
        no_in: int = 0,
        no_out: int = 0,
    ) -> bool:
        """Whether some node of ``source`` is m-connected to ``target`` given ``given``
        in the graph with edges into ``no_in`` and directed edges out of ``no_out``
        removed (the mutilated graph of do-calculus).
        """
        pa, ch, sib = self._pa, self._ch, self._sib
        keep_in = ~no_in

        def parents(i: int) -> int:
            return 0 if no_in >> i & 1 else pa[i] & ~no_out

        def children(i: int) -> int:
            return 0 if no_out >> i & 1 else ch[i] & keep_in

        def siblings(i: int) -> int:
            return 0 if no_in >> i & 1 else sib[i] & keep_in

        # ancestors of the conditioning set in the mutilated graph
        an_given = given
        frontier = given
        while frontier:
            new = 0
            for i in iter_bits(frontier):
                new |= parents(i)
            new &= ~an_given
            an_given |= new
            frontier = new
        # reachability over (node, arrived-with-arrowhead) states
        seen_head = 0
        seen_tail = 0
        stack_tail = source & ~given  # start nodes behave like tail arrivals
        stack_head = 0
        while stack_tail or stack_head:
            if stack_tail:
                low = stack_tail & -stack_tail
                stack_tail ^= low
                i = low.bit_length() - 1
                if given >> i & 1:
                    continue
                nxt_head = children(i) | siblings(i)
                nxt_tail = parents(i)
            else:
                low = stack_head & -stack_head
                stack_head ^= low
                i = low.bit_length() - 1
                nxt_head = 0
                nxt_tail = 0
                if not given >> i & 1:
                    nxt_head |= children(i)
                if an_given >> i & 1:
                    nxt_head |= siblings(i)
                    nxt_tail |= parents(i)
            if (nxt_head | nxt_tail) & target:
                # reaching a target node ends an m-connecting path
                return True
            nxt_head &= ~seen_head
            nxt_tail &= ~seen_tail
            seen_head |= nxt_head
            seen_tail |= nxt_tail
            stack_head |= nxt_head
            stack_tail |= nxt_tail
        return False

    def m_separated(
        self,
        xs: str | Iterable[str],
        ys: str | Iterable[str],
        zs: str | Iterable[str] = (),
    ) -> bool:
        """Whether ``xs`` and ``ys`` are m-separated given ``zs`` (Richardson, 2003).

        m-separation is d-separation extended to bidirected edges: a path is open
        when each collider is an ancestor of ``zs`` and no other node is in ``zs``.

        :param xs: a node or set of nodes.
        :param ys: a node or set of nodes, disjoint from ``xs``.
        :param zs: the conditioning set, disjoint from both.
        :raises GraphError: if the sets overlap.

        >>> g = ADMG.from_string("X -> M -> Y; X <-> Y")
        >>> g.m_separated("X", "Y", ["M"]), g.m_separated("M", "Y", ["X"])
        (False, False)
        >>> ADMG.from_string("X -> M -> Y").m_separated("X", "Y", ["M"])
        True
        """
        mx, my, mz = self._mask(xs), self._mask(ys), self._mask(zs)
        if mx & my or mx & mz or my & mz:
            overlap = self._unmask((mx & my) | (mx & mz) | (my & mz))
            raise GraphError(
                f"m-separation needs disjoint sets; {sorted(overlap)} appear twice"
            )
        return not self._m_connected(mx, my, mz)

    # ----------------------------------------------------------- projections
    def latent_projection(self, latent: Iterable[str]) -> ADMG:
        """Project out ``latent`` nodes (Verma & Pearl, 1990; Richardson, 2003).

        The result keeps the other nodes; it has ``a -> b`` when a directed path
        runs from ``a`` to ``b`` through latent nodes only, and ``a <-> b`` when a
        path between them has arrowheads at both ends and only latent
        non-colliders inside (a latent common cause, possibly via bidirected
        edges).

        >>> g = ADMG.from_string("U -> X; U -> Y; X -> L -> Y")
        >>> print(g.latent_projection(["U", "L"]))
        X -> Y; X <-> Y
        """
        lat = self._mask(latent)
        n = len(self._names)
        # observed nodes reached from each node by directed paths through latents
        reach: list[int] = [0] * n
        for i in reversed(range(n)):
            m = 0
            for c in iter_bits(self._ch[i]):
                m |= reach[c] if lat >> c & 1 else 1 << c
            reach[i] = m

        def rep(i: int) -> int:
            return reach[i] if lat >> i & 1 else 1 << i

        names = self._names
        directed = []
        for i in iter_bits(self._full & ~lat):
            for j in iter_bits(reach[i]):
                directed.append((names[i], names[j]))
        pairs: set[tuple[int, int]] = set()

        def connect(m1: int, m2: int) -> None:
            for a in iter_bits(m1):
                for b in iter_bits(m2):
                    if a != b:
                        pairs.add((min(a, b), max(a, b)))

        for i in iter_bits(lat):
            connect(reach[i], reach[i])
        for a, b in self._bidirected:
            connect(rep(self._index[a]), rep(self._index[b]))
        keep = [v for v in self._nodes if not lat >> self._index[v] & 1]
        order = {v: k for k, v in enumerate(keep)}
        directed.sort(key=lambda e: (order[e[1]], order[e[0]]))
        bid = sorted(
            ((names[a], names[b]) for a, b in pairs),
            key=lambda e: (order[e[0]], order[e[1]]),
        )
        return ADMG(directed, bid, keep)

    def to_networkx(self) -> nx.MultiDiGraph:
        """Export as a networkx ``MultiDiGraph``; bidirected edges appear in both
        directions with ``kind="bidirected"``, directed ones with ``kind="directed"``.

        >>> ADMG.from_string("X -> Y; X <-> Y").to_networkx().number_of_edges()
        3
        """
        g = nx.MultiDiGraph()
        g.add_nodes_from(self._nodes)
        for a, b in self._directed:
            g.add_edge(a, b, kind="directed")
        for a, b in self._bidirected:
            g.add_edge(a, b, kind="bidirected")
            g.add_edge(b, a, kind="bidirected")
        return g


__all__ = ["ADMG"]
