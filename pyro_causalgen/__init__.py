"""pyro_causalgen: causal generative models for Pyro.

Flow mechanisms at sample sites, interventions (:func:`do`), twin- and multi-world
counterfactuals with shared noise (:func:`counterfactual`), identification of causal
queries from the program's graph (:func:`identify`), fitting (:func:`fit`),
answering a query with a fitted model (:func:`ask`), saving (:func:`save` /
:func:`load`), and a graph builder (:class:`StructuralCausalModel`).
"""

from pyro_causalgen.analysis import QueryAnswer, ask
from pyro_causalgen.flowify import FlowifiedModel, flowify
from pyro_causalgen.graph import ADMG, extract_graph
from pyro_causalgen.handlers import (
    MultiWorldCounterfactual,
    TwinWorldCounterfactual,
    do,
    gather,
    world_value,
)
from pyro_causalgen.identify import (
    CausalQuery,
    CounterfactualQuery,
    NonIdentifiableWarning,
    Unidentifiable,
    identify,
    parse_query,
)
from pyro_causalgen.identify.guard import check_identifiable
from pyro_causalgen.infer import FitHistory, abduct, counterfactual, fit
from pyro_causalgen.io import load, save
from pyro_causalgen.mechanisms import (
    BernoulliMechanism,
    CategoricalMechanism,
    FlowMechanism,
    LocScaleMechanism,
    MAFMechanism,
    MechanismDistribution,
    NSFMechanism,
)
from pyro_causalgen.scm import StructuralCausalModel

__version__ = "0.1.0"

__all__ = [
    "ADMG",
    "BernoulliMechanism",
    "CausalQuery",
    "CounterfactualQuery",
    "CategoricalMechanism",
    "FitHistory",
    "FlowifiedModel",
    "FlowMechanism",
    "LocScaleMechanism",
    "MAFMechanism",
    "MechanismDistribution",
    "MultiWorldCounterfactual",
    "NSFMechanism",
    "NonIdentifiableWarning",
    "QueryAnswer",
    "StructuralCausalModel",
    "TwinWorldCounterfactual",
    "Unidentifiable",
    "abduct",
    "ask",
    "check_identifiable",
    "counterfactual",
    "do",
    "extract_graph",
    "fit",
    "flowify",
    "gather",
    "identify",
    "load",
    "parse_query",
    "save",
    "world_value",
]
