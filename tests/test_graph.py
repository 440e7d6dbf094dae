"""Tests for pyro_causalgen.graph.admg: construction, relations, districts,
m-separation (checked against networkx d-separation on the canonical DAG) and
latent projection."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest

from pyro_causalgen.errors import CausalModelError, UnknownSiteError
from pyro_causalgen.graph import (
    ADMG,
    CycleError,
    GraphSyntaxError,
    SelfLoopError,
    UnknownNodeError,
)


def test_from_string_and_edges_agree():
    g1 = ADMG.from_string("X -> Y; Z -> X; X <-> Y")
    g2 = ADMG([("X", "Y"), ("Z", "X")], [("Y", "X")])
    assert g1 == g2 and hash(g1) == hash(g2)
    assert set(g1.nodes) == {"X", "Y", "Z"}
    assert g1.topological_order() == ("Z", "X", "Y")


def test_string_chains_groups_and_isolated_nodes():
    g = ADMG.from_string("A, B -> C -> D\nE <- D; F; A <-> F")
    assert g.parents("C") == {"A", "B"}
    assert g.parents("E") == {"D"}
    assert g.siblings("F") == {"A"}
    assert "F" in g and len(g) == 6


def test_str_round_trip():
    g = ADMG.from_string("Z -> X -> Y; X <-> Y; W")
    assert ADMG.from_string(str(g)) == g
    assert eval(repr(g), {"ADMG": ADMG}) == g


@pytest.mark.parametrize(
    "text, match",
    [
        ("X -> Y -> Z -> X", "X -> Y -> Z -> X"),
        ("A -> B; B -> A", "A -> B -> A"),
    ],
)
def test_cycles_are_named(text, match):
    with pytest.raises(CycleError, match=match):
        ADMG.from_string(text)


def test_self_loops_rejected():
    with pytest.raises(SelfLoopError, match="'X'"):
        ADMG.from_string("X -> X")
    with pytest.raises(SelfLoopError, match="X <-> X"):
        ADMG([], [("X", "X")])


@pytest.mark.parametrize("bad", ["X -> ", "-> Y", "X => Y", "X -> Y Z", "X, -> Y"])
def test_syntax_errors_name_the_statement(bad):
    with pytest.raises(GraphSyntaxError, match="cannot parse"):
        ADMG.from_string(bad)


def test_unknown_node_error_is_a_key_and_value_error():
    g = ADMG.from_string("X -> Y")
    with pytest.raises(UnknownNodeError, match="'Q'") as info:
        g.ancestors(["X", "Q"])
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, CausalModelError)
    assert isinstance(info.value, UnknownSiteError)


def test_relations_on_a_small_graph():
    g = ADMG.from_string("A -> B -> D; A -> C -> D; D -> E; B <-> E; C <-> F")
    assert g.parents("D") == {"B", "C"}
    assert g.children("A") == {"B", "C"}
    assert g.ancestors("D") == {"A", "B", "C", "D"}
    assert g.ancestors("D", include_self=False) == {"A", "B", "C"}
    assert g.descendants("B") == {"B", "D", "E"}
    assert g.descendants(["B", "C"], include_self=False) == {"D", "E"}
    assert sorted(map(sorted, g.districts())) == [["A"], ["B", "E"], ["C", "F"], ["D"]]
    assert g.district("E") == {"B", "E"}
    sub = g.subgraph(["B", "D", "E"])
    assert sub.directed_edges == (("B", "D"), ("D", "E"))
    assert sub.bidirected_edges == (("B", "E"),)
    bar = g.remove_incoming(["D"])
    assert bar.parents("D") == frozenset() and bar.children("D") == {"E"}
    under = g.remove_outgoing(["B"])
    assert under.children("B") == frozenset() and under.siblings("B") == {"E"}


def test_topological_order_respects_edges():
    rng = random.Random(1)
    for _ in range(20):
        g = _random_admg(rng, 12, 0.25, 0.1)
        pos = {v: i for i, v in enumerate(g.topological_order())}
        assert all(pos[a] < pos[b] for a, b in g.directed_edges)


def _random_admg(rng, n, p_dir, p_bi):
    names = [f"V{i}" for i in range(n)]
    perm = names[:]
    rng.shuffle(perm)
    d = [
        (a, b)
        for i, a in enumerate(perm)
        for b in perm[i + 1 :]
        if rng.random() < p_dir
    ]
    b = [(a, c) for a, c in itertools.combinations(names, 2) if rng.random() < p_bi]
    return ADMG(d, b, names)


def _canonical_dag(g: ADMG) -> nx.DiGraph:
    """Each bidirected edge becomes a latent common parent."""
    dag = nx.DiGraph()
    dag.add_nodes_from(g.nodes)
    dag.add_edges_from(g.directed_edges)
    for k, (a, b) in enumerate(g.bidirected_edges):
        dag.add_edge(f"_U{k}", a)
        dag.add_edge(f"_U{k}", b)
    return dag


def _nx_d_separated(dag, x, y, z):
    fn = getattr(nx, "is_d_separator", None) or nx.d_separated
    return fn(dag, set(x), set(y), set(z))


def test_m_separation_matches_d_separation_in_canonical_dag():
    rng = random.Random(0)
    checked = 0
    for _ in range(40):
        g = _random_admg(rng, 7, 0.3, 0.15)
        dag = _canonical_dag(g)
        nodes = list(g.nodes)
        for _ in range(15):
            rng.shuffle(nodes)
            x, y = [nodes[0]], [nodes[1]]
            z = [v for v in nodes[2:] if rng.random() < 0.4]
            assert g.m_separated(x, y, z) == _nx_d_separated(dag, x, y, z), (g, x, y, z)
            checked += 1
    assert checked == 600


def test_m_separation_textbook():
    g = ADMG.from_string("X -> Z <- Y")
    assert g.m_separated("X", "Y") and not g.m_separated("X", "Y", ["Z"])
    m = ADMG.from_string("A <-> M <-> B")  # M-bias with bidirected edges
    assert m.m_separated("A", "B") and not m.m_separated("A", "B", ["M"])
    with pytest.raises(CausalModelError, match="disjoint"):
        g.m_separated("X", "X")


def test_latent_projection_matches_definition():
    g = ADMG.from_string("U -> X; U -> Y; X -> L -> Y; W -> L; A <-> U")
    p = g.latent_projection(["U", "L"])
    assert set(p.nodes) == {"X", "Y", "W", "A"}
    assert set(p.directed_edges) == {("X", "Y"), ("W", "Y")}
    assert {frozenset(e) for e in p.bidirected_edges} == {
        frozenset(("X", "Y")),
        frozenset(("A", "X")),
        frozenset(("A", "Y")),
    }


def test_latent_projection_preserves_m_separation():
    rng = random.Random(3)
    for _ in range(25):
        g = _random_admg(rng, 8, 0.3, 0.1)
        latent = [v for v in g.nodes if rng.random() < 0.3]
        p = g.latent_projection(latent)
        obs = list(p.nodes)
        for x, y in itertools.combinations(obs, 2):
            rest = [v for v in obs if v not in (x, y)]
            z = [v for v in rest if rng.random() < 0.5]
            assert p.m_separated(x, y, z) == g.m_separated(x, y, z)


def test_to_networkx():
    nxg = ADMG.from_string("X -> Y; X <-> Y").to_networkx()
    kinds = sorted(d["kind"] for _, _, d in nxg.edges(data=True))
    assert kinds == ["bidirected", "bidirected", "directed"]
