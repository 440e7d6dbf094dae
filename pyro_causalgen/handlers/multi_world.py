"""Multi-world counterfactuals: one factual world and one world per named intervention.

Unlike ChiRho's ``MultiWorldCounterfactual``, which adds a world dim per intervention
(``2^k`` worlds for ``k`` interventions), the worlds here are declared up front and
share one world dim: ``1 + len(worlds)`` worlds, so cost grows with the worlds used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pyro_causalgen.errors import CounterfactualError
from pyro_causalgen.handlers.worlds import FACTUAL, Intervention, WorldsMessenger


class MultiWorldCounterfactual(WorldsMessenger):
    """Run a model in the factual world and in one world per named intervention set.

    All worlds share every site's exogenous noise. World ``name`` applies
    ``worlds[name]`` (``site -> intervention``); interventions from an enclosed
    :func:`~pyro_causalgen.do` apply in every non-factual world. World dims are placed
    to the left of the model's plates, index 0 is ``"factual"`` and index ``i`` the
    ``i``-th key of ``worlds``.

    :param worlds: ``world name -> {site: intervention}``; names must be distinct and
        not ``"factual"``.
    :param observations: ``site -> value`` observed in the factual world.
    :param max_plate_nesting: number of plate dims of the model (default: inferred).

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     t = pyro.sample("t", dist.Normal(0.0, 1.0))
        ...     return pyro.sample("y", dist.Normal(t, 1.0))
        >>> worlds = {"treated": {"t": 1.0}, "control": {"t": 0.0}}
        >>> with MultiWorldCounterfactual(worlds, {"t": 0.5, "y": 1.5}) as mw:
        ...     y = model()
        >>> [mw.gather(y, w).item() for w in ("factual", "treated", "control")]
        [1.5, 2.0, 1.0]
    """

    def __init__(
        self,
        worlds: Mapping[str, Mapping[str, Intervention]],
        observations: Mapping[str, Any] | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        if not isinstance(worlds, Mapping) or not worlds:
            raise CounterfactualError(
                "MultiWorldCounterfactual needs a non-empty mapping "
                "world name -> {site: intervention}"
            )
        if FACTUAL in worlds:
            raise CounterfactualError(f"world name {FACTUAL!r} is reserved")
        super().__init__(tuple(worlds), worlds, observations, max_plate_nesting)


def multi_world(
    fn: Callable | None = None,
    worlds: Mapping[str, Mapping[str, Intervention]] | None = None,
    observations: Mapping[str, Any] | None = None,
    max_plate_nesting: int | None = None,
) -> Any:
    """Functional form of :class:`MultiWorldCounterfactual`.

    :returns: ``fn`` wrapped in the handler, or the handler when ``fn`` is ``None``.

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     return pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> multi_world(model, {"a": {"x": 1.0}, "b": {"x": 2.0}})()[1:].tolist()
        [1.0, 2.0]
    """
    handler = MultiWorldCounterfactual(worlds or {}, observations, max_plate_nesting)
    return handler(fn) if fn is not None else handler
