"""Effect handlers: interventions (and, built on them, counterfactual worlds)."""

from pyro_causalgen.handlers.do_messenger import DoMessenger, do, stochastic_site_name

__all__ = ["DoMessenger", "do", "stochastic_site_name"]
