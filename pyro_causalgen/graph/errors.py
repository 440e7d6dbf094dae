"""Errors raised by :mod:`pyro_causalgen.graph`; each names the node or edge at
fault."""

from __future__ import annotations

from pyro_causalgen.errors import CausalModelError, UnknownSiteError


class GraphError(CausalModelError):
    """An acyclic directed mixed graph (ADMG) is malformed.

    >>> issubclass(GraphError, ValueError)
    True
    """


class CycleError(GraphError):
    """The directed edges contain a cycle; the message lists one cycle.

    >>> from pyro_causalgen.graph import ADMG
    >>> try:
    ...     ADMG.from_string("X -> Y -> X")
    ... except CycleError as e:
    ...     print(e)
    directed edges form a cycle: X -> Y -> X
    """


class SelfLoopError(GraphError):
    """An edge joins a node to itself.

    >>> from pyro_causalgen.graph import ADMG
    >>> try:
    ...     ADMG([("X", "X")])
    ... except SelfLoopError as e:
    ...     print(e)
    self-loop on node 'X' (X -> X)
    """


class UnknownNodeError(GraphError, UnknownSiteError):
    """A name does not refer to a node of the graph.

    >>> from pyro_causalgen.graph import ADMG
    >>> try:
    ...     ADMG.from_string("X -> Y").parents("Z")
    ... except UnknownNodeError as e:
    ...     print(e)
    unknown node 'Z'; the graph has nodes X, Y
    """


class GraphSyntaxError(GraphError):
    """A compact graph string cannot be parsed.

    >>> from pyro_causalgen.graph import ADMG
    >>> try:
    ...     ADMG.from_string("X -> ")
    ... except GraphSyntaxError as e:
    ...     print(e)
    cannot parse graph statement 'X ->': missing node name after '->'
    """


__all__ = [
    "CycleError",
    "GraphError",
    "GraphSyntaxError",
    "SelfLoopError",
    "UnknownNodeError",
]
