"""Causal analysis of fitted models: simulation under do, effects, uncertainty."""

from pyro_causalgen.analysis.effects import (
    MonteCarloEstimate,
    average_treatment_effect,
    conditional_average_treatment_effect,
    effect_of_treatment_on_the_treated,
    interventional_mean,
    unit_level_effects,
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
    "conditional_average_treatment_effect",
    "effect_of_treatment_on_the_treated",
    "effect_over_members",
    "fit_ensemble",
    "interventional_mean",
    "paired_simulations",
    "simulate",
    "unit_level_effects",
]
