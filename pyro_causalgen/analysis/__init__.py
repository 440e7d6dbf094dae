"""Causal analysis of fitted models: simulation under do, effects, uncertainty.

:func:`ask` answers a query string (``"E[y | do(x=1)] - E[y | do(x=0)]"``) after
checking it for identifiability; the functions it builds on are exported too.
"""

from pyro_causalgen.analysis.doubly_robust import (
    DoublyRobustEstimate,
    PositivityWarning,
)
from pyro_causalgen.analysis.effects import (
    MonteCarloEstimate,
    average_treatment_effect,
    conditional_average_treatment_effect,
    effect_of_treatment_on_the_treated,
    interventional_mean,
    unit_level_effects,
)
from pyro_causalgen.analysis.query import (
    QueryAnswer,
    UnsupportedQueryError,
    ask,
    parse_question,
)
from pyro_causalgen.analysis.simulate import paired_simulations, simulate
from pyro_causalgen.analysis.uncertainty import (
    EffectDraws,
    Ensemble,
    effect_over_members,
    fit_ensemble,
)

__all__ = [
    "DoublyRobustEstimate",
    "PositivityWarning",
    "EffectDraws",
    "Ensemble",
    "MonteCarloEstimate",
    "QueryAnswer",
    "UnsupportedQueryError",
    "ask",
    "average_treatment_effect",
    "conditional_average_treatment_effect",
    "effect_of_treatment_on_the_treated",
    "effect_over_members",
    "fit_ensemble",
    "interventional_mean",
    "paired_simulations",
    "parse_question",
    "simulate",
    "unit_level_effects",
]
