"""Errors and warnings of :mod:`pyro_causalgen.identify`."""

from __future__ import annotations

from typing import Any

from pyro_causalgen.errors import CausalModelError, DataError, UnknownSiteError


class Unidentifiable(CausalModelError):
    """The query is not identifiable from the observational distribution.

    :ivar witness: the proof (a :class:`~pyro_causalgen.identify.Hedge` for ID /
        IDC, a :class:`~pyro_causalgen.identify.CounterfactualWitness` for
        ID* / IDC*).

    >>> from pyro_causalgen.identify import identify
    >>> try:
    ...     identify("X -> Y; X <-> Y", "P(Y | do(X))", strict=True)
    ... except Unidentifiable as e:
    ...     print(sorted(e.witness.f), sorted(e.witness.f_prime))
    ['X', 'Y'] ['Y']
    """

    def __init__(self, message: str, witness: Any = None) -> None:
        super().__init__(message)
        self.witness = witness


class NonIdentifiableWarning(UserWarning):
    """Warned when a model is asked a query that the data cannot determine.

    >>> issubclass(NonIdentifiableWarning, UserWarning)
    True
    """


class QuerySyntaxError(CausalModelError):
    """A query string is malformed; the message points at the problem.

    >>> from pyro_causalgen.identify import parse_query
    >>> try:
    ...     parse_query("P(Y | do(X)")
    ... except QuerySyntaxError as e:
    ...     print(e)
    malformed query 'P(Y | do(X)': expected ')' at end of input
    """


class UnknownVariableError(UnknownSiteError):
    """A query mentions a variable that the graph does not have.

    >>> from pyro_causalgen.identify import identify
    >>> try:
    ...     identify("X -> Y", "P(Y | do(W))")
    ... except UnknownVariableError as e:
    ...     print(e)
    query mentions unknown variable 'W'; the graph has X, Y
    """


class InconsistentEvidenceError(CausalModelError):
    """A conditional counterfactual query conditions on an impossible event.

    IDC* (Shpitser & Pearl, 2008) returns UNDEFINED for such queries.

    >>> from pyro_causalgen.identify import identify
    >>> try:
    ...     identify("X -> Y", "P(Y=1 | X_{X=0}=1)")
    ... except InconsistentEvidenceError as e:
    ...     print(type(e).__name__)
    InconsistentEvidenceError
    """


class PositivityError(DataError):
    """An estimand conditions on an event the data give probability zero.

    >>> issubclass(PositivityError, ValueError)
    True
    """


__all__ = [
    "InconsistentEvidenceError",
    "NonIdentifiableWarning",
    "PositivityError",
    "QuerySyntaxError",
    "Unidentifiable",
    "UnknownVariableError",
]
