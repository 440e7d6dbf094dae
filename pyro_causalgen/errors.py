"""Exceptions of pyro_causalgen; each names the site, column, edge or shape at fault."""

from __future__ import annotations


class CausalModelError(ValueError):
    """Base class for misuse of a causal model (bad sites, shapes, data or graphs)."""


class UnknownSiteError(CausalModelError, KeyError):
    """A name refers to a sample site that the model does not have."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class DataError(CausalModelError):
    """Data given to fit or a query is malformed (NaN, missing column, shape, dtype)."""


class ShapeError(CausalModelError):
    """A tensor's shape does not match what a site or mechanism expects."""


class CounterfactualError(CausalModelError):
    """A counterfactual query is malformed or a handler is misused; names the site.

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> from pyro_causalgen.handlers import TwinWorldCounterfactual
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0), obs=0.0)
        >>> try:
        ...     with TwinWorldCounterfactual({}):
        ...         model()
        ... except CounterfactualError as err:
        ...     print("x" in str(err))
        True
    """


class NoiseRepresentationError(CounterfactualError):
    """A site's distribution has no known noise representation ``x = f(u; pa)``.

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> from pyro_causalgen.handlers import TwinWorldCounterfactual
        >>> def model():
        ...     pyro.sample("k", dist.Poisson(3.0))
        >>> try:
        ...     with TwinWorldCounterfactual({}):
        ...         model()
        ... except NoiseRepresentationError as err:
        ...     print(str(err).split(":")[0])
        site 'k'
    """
