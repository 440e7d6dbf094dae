"""Synthetic SCMs with known ground truth and small shipped datasets."""

from pyro_causalgen.datasets.causal_nf import CAUSAL_NF_SCMS, GroundTruthSCM, load_scm
from pyro_causalgen.datasets.morpho import (
    MORPHO_GRAPH,
    MorphoFlowModel,
    measure_morpho,
    morpho_counterfactual,
    sample_morpho,
)
from pyro_causalgen.datasets.triangle import (
    TRIANGLE_GRAPH,
    load_triangle,
    sample_triangle,
    triangle_effect,
)

__all__ = [
    "CAUSAL_NF_SCMS",
    "MORPHO_GRAPH",
    "MorphoFlowModel",
    "TRIANGLE_GRAPH",
    "GroundTruthSCM",
    "load_scm",
    "load_triangle",
    "measure_morpho",
    "morpho_counterfactual",
    "sample_morpho",
    "sample_triangle",
    "triangle_effect",
]
