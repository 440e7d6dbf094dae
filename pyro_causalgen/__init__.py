"""pyro_causalgen: causal generative models for Pyro.

Flow mechanisms at sample sites, interventions (:func:`do`), fitting (:func:`fit`),
saving (:func:`save` / :func:`load`), and a graph builder
(:class:`StructuralCausalModel`).
"""

from pyro_causalgen.handlers import do
from pyro_causalgen.infer import FitHistory, fit
from pyro_causalgen.io import load, save
from pyro_causalgen.mechanisms import (
    FlowMechanism,
    LocScaleMechanism,
    MAFMechanism,
    MechanismDistribution,
    NSFMechanism,
)
from pyro_causalgen.scm import StructuralCausalModel

__version__ = "0.1.0"

__all__ = [
    "FitHistory",
    "FlowMechanism",
    "LocScaleMechanism",
    "MAFMechanism",
    "MechanismDistribution",
    "NSFMechanism",
    "StructuralCausalModel",
    "do",
    "fit",
    "load",
    "save",
]
