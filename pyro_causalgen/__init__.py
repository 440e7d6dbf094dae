"""pyro_causalgen: causal generative models for Pyro.

Flow mechanisms at sample sites, interventions (:func:`do`), twin- and multi-world
counterfactuals with shared noise (:func:`counterfactual`), fitting (:func:`fit`),
saving (:func:`save` / :func:`load`), and a graph builder
(:class:`StructuralCausalModel`).
"""

from pyro_causalgen.handlers import (
    MultiWorldCounterfactual,
    TwinWorldCounterfactual,
    do,
    gather,
    world_value,
)
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
    "BernoulliMechanism",
    "CategoricalMechanism",
    "FitHistory",
    "FlowMechanism",
    "LocScaleMechanism",
    "MAFMechanism",
    "MechanismDistribution",
    "MultiWorldCounterfactual",
    "NSFMechanism",
    "StructuralCausalModel",
    "TwinWorldCounterfactual",
    "abduct",
    "counterfactual",
    "do",
    "fit",
    "gather",
    "load",
    "save",
    "world_value",
]
