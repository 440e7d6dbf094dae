"""Identification: is a causal or counterfactual query determined by the
observational distribution, given the graph?  If so, by which formula.

ID / IDC (Shpitser & Pearl, 2006) answer interventional queries such as
``P(Y | do(X), Z)``; ID* / IDC* (Shpitser & Pearl, 2008) answer counterfactual
ones such as ``P(Y_{X=1}=1 | X=0)``.  Estimands print as text and LaTeX and
evaluate on discrete data with funsor.

>>> from pyro_causalgen.identify import identify
>>> print(identify("Z -> X -> Y; Z -> Y", "P(Y | do(X))").estimand)
Σ_{Z} P(Z) P(Y | Z, X)
"""

from pyro_causalgen.identify.api import IdentificationResult, as_graph, identify
from pyro_causalgen.identify.errors import (
    InconsistentEvidenceError,
    NonIdentifiableWarning,
    PositivityError,
    QuerySyntaxError,
    Unidentifiable,
    UnknownVariableError,
)
from pyro_causalgen.identify.estimand import (
    Constant,
    Estimand,
    Expression,
    Fraction,
    Probability,
    Product,
    Sum,
)
from pyro_causalgen.identify.evaluate import evaluate
from pyro_causalgen.identify.guard import check_identifiable
from pyro_causalgen.identify.parser import as_query, parse_query
from pyro_causalgen.identify.query import (
    CausalQuery,
    CounterfactualQuery,
    Event,
    Query,
    Symbol,
    Variable,
)
from pyro_causalgen.identify.witness import CounterfactualWitness, Hedge

__all__ = [
    "CausalQuery",
    "Constant",
    "CounterfactualQuery",
    "CounterfactualWitness",
    "Estimand",
    "Event",
    "Expression",
    "Fraction",
    "Hedge",
    "IdentificationResult",
    "InconsistentEvidenceError",
    "NonIdentifiableWarning",
    "PositivityError",
    "Probability",
    "Product",
    "Query",
    "QuerySyntaxError",
    "Sum",
    "Symbol",
    "Unidentifiable",
    "UnknownVariableError",
    "Variable",
    "as_graph",
    "as_query",
    "check_identifiable",
    "evaluate",
    "identify",
    "parse_query",
]
