"""Effect handlers: interventions and counterfactual worlds with shared noise."""

from pyro_causalgen.errors import CounterfactualError, NoiseRepresentationError
from pyro_causalgen.handlers.do_messenger import DoMessenger, do, stochastic_site_name
from pyro_causalgen.handlers.multi_world import MultiWorldCounterfactual, multi_world
from pyro_causalgen.handlers.noise import (
    NoiseForm,
    noise_form,
    noise_site_name,
)
from pyro_causalgen.handlers.twin_world import TwinWorldCounterfactual, twin_world
from pyro_causalgen.handlers.worlds import (
    COUNTERFACTUAL,
    FACTUAL,
    WorldInfo,
    WorldsMessenger,
    WorldValue,
    gather,
    world_value,
)

__all__ = [
    "COUNTERFACTUAL",
    "CounterfactualError",
    "DoMessenger",
    "FACTUAL",
    "MultiWorldCounterfactual",
    "NoiseForm",
    "NoiseRepresentationError",
    "TwinWorldCounterfactual",
    "WorldInfo",
    "WorldValue",
    "WorldsMessenger",
    "do",
    "gather",
    "multi_world",
    "noise_form",
    "noise_site_name",
    "stochastic_site_name",
    "twin_world",
    "world_value",
]
