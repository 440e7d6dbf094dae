"""Wrap an existing Pyro program so that its sample sites become learned mechanisms.

:func:`flowify` reads each site's parents by provenance tracking on trial runs and
returns a :class:`FlowifiedModel` (an ``nn.Module``) that runs the program unchanged
except that chosen sites are evaluated by conditional flows given their parents.
Fit it with :func:`~pyro_causalgen.infer.fit`, intervene with
:func:`~pyro_causalgen.handlers.do`, save it with :meth:`FlowifiedModel.save_state`.
"""

from pyro_causalgen.flowify.dependencies import (
    SiteInfo,
    discover_structure,
    flow_support,
    has_gumbel_max,
)
from pyro_causalgen.flowify.errors import UnsupportedModelError
from pyro_causalgen.flowify.messenger import FlowifyMessenger
from pyro_causalgen.flowify.model import (
    FlowifiedModel,
    FlowifyWarning,
    choose_sites,
    flowify,
)

__all__ = [
    "FlowifiedModel",
    "FlowifyMessenger",
    "FlowifyWarning",
    "SiteInfo",
    "UnsupportedModelError",
    "choose_sites",
    "discover_structure",
    "flow_support",
    "has_gumbel_max",
    "flowify",
]
