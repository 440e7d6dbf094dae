"""Errors raised while wrapping a Pyro program; each names the site at fault."""

from __future__ import annotations

from pyro_causalgen.errors import CausalModelError


class UnsupportedModelError(CausalModelError):
    """The program uses a construct that a fixed mechanism graph cannot represent.

    Raised for control flow that depends on sampled values, parent sets that change
    between runs, sites whose support or event shape has no flow mechanism, discrete
    sites without a Gumbel-max representation and dependencies across a plate.

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> from pyro_causalgen.flowify import flowify
        >>> def model():  # which site exists depends on a draw
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     if x > 0:
        ...         pyro.sample("y", dist.Normal(x, 1.0))
        >>> try:
        ...     flowify(model, trials=20, seed=0)
        ... except UnsupportedModelError as err:
        ...     print(type(err).__name__)
        UnsupportedModelError
    """
