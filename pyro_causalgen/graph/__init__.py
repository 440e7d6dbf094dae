"""Causal graphs: acyclic directed mixed graphs (ADMGs) and their extraction from
Pyro programs.

>>> from pyro_causalgen.graph import ADMG
>>> ADMG.from_string("X -> Y; X <-> Y").district("X") == {"X", "Y"}
True
"""

from pyro_causalgen.graph.admg import ADMG
from pyro_causalgen.graph.errors import (
    CycleError,
    GraphError,
    GraphSyntaxError,
    SelfLoopError,
    UnknownNodeError,
)
from pyro_causalgen.graph.extract import extract_graph, model_dependencies

__all__ = [
    "ADMG",
    "CycleError",
    "GraphError",
    "GraphSyntaxError",
    "SelfLoopError",
    "UnknownNodeError",
    "extract_graph",
    "model_dependencies",
]
