"""Causal analysis of fitted models: simulation under do, effects, uncertainty."""

from pyro_causalgen.analysis.effects import (
    MonteCarloEstimate,
    average_treatment_effect,
    interventional_mean,
)
from pyro_causalgen.analysis.simulate import paired_simulations, simulate
from pyro_causalgen.analysis.uncertainty import (
    EffectDraws,
    Ensemble,
    effect_over_members,
    fit_ensemble,
)

__all__ = [
    "EffectDraws",
    "Ensemble",
    "MonteCarloEstimate",
    "average_treatment_effect",
    "effect_over_members",
    "fit_ensemble",
    "interventional_mean",
    "paired_simulations",
    "simulate",
]
