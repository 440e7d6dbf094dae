"""Errors raised while wrapping a Pyro program; each names the site at fault."""

from __future__ import annotations

from pyro_causalgen.errors import CausalModelError


class UnsupportedModelError(CausalModelError):
    """The program uses a construct that a fixed mechanism graph cannot represent.

    Raised for control flow that depends on sampled values, parent sets that change
    between runs, sites whose support or event shape has no flow mechanism, discrete
    sites without a Gumbel-max representation and dependencies across a plate.
    """
