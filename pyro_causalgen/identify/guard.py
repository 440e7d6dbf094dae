"""Guard for the analysis layer: warn (or raise) before answering a query that the
observational data cannot determine."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

from pyro_causalgen.graph.admg import ADMG
from pyro_causalgen.identify.api import IdentificationResult, identify
from pyro_causalgen.identify.errors import NonIdentifiableWarning, Unidentifiable
from pyro_causalgen.identify.query import Query


def check_identifiable(
    model_or_graph: ADMG | str | Callable[..., Any],
    query: Query | str,
    observed: Iterable[str] | None = None,
    strict: bool = False,
) -> IdentificationResult:
    """Check a query before a fitted model answers it by simulation.

    A generative model answers any query, even one the data cannot determine; in
    that case its answer reflects the model's inductive biases, not the data.
    This check warns (:class:`NonIdentifiableWarning`) or, with ``strict=True``,
    raises :class:`Unidentifiable`; both name the witness.

    :param model_or_graph: a Pyro program, an :class:`ADMG` or a graph string.
    :param query: the query, as an object or a string.
    :param observed: the observed sites; the others are projected out.
    :param strict: raise instead of warning.
    :returns: the :class:`IdentificationResult` (also when a warning was issued).
    :raises Unidentifiable: with ``strict=True`` when the query is not identifiable.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     r = check_identifiable("X -> Y; X <-> Y", "P(Y | do(X))")
    >>> r.identifiable, caught[0].category.__name__
    (False, 'NonIdentifiableWarning')
    """
    result = identify(model_or_graph, query, observed)
    if not result.identifiable:
        message = (
            f"{result.explanation} A fitted model will still answer {result.query}, "
            "but the answer is determined by the model's assumptions, not the data."
        )
        if strict:
            raise Unidentifiable(message, result.witness)
        warnings.warn(message, NonIdentifiableWarning, stacklevel=2)
    return result


__all__ = ["check_identifiable"]
