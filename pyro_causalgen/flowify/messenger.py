"""``FlowifyMessenger``: evaluate chosen sample sites by learned mechanisms.

The program runs unchanged. At each chosen site the distribution the program wrote is
replaced, before sampling or scoring, by the site's mechanism evaluated at the values
its parents took in this run; every other site keeps the program's distribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

from pyro_causalgen.errors import ShapeError
from pyro_causalgen.flowify.dependencies import is_plate_site
from pyro_causalgen.flowify.errors import UnsupportedModelError
from pyro_causalgen.mechanisms import Mechanism, MechanismDistribution


class FlowifyMessenger(Messenger):
    """Replace ``msg["fn"]`` at chosen sites by their mechanism at the parents' values.

    Parent values are read when the child is sampled, from the parents' messages as
    every handler left them, so interventions (:func:`~pyro_causalgen.handlers.do`),
    conditioning and world-indexed values from counterfactual handlers reach the
    mechanism whatever the order of the handlers.

    The mechanism's distribution is expanded to the batch shape of the program's own
    distribution at the site (its plates, and any world dims the parents carry), so
    plates and event shapes are kept.

    :param mechanisms: ``site -> mechanism``; each mechanism's ``parents`` name the
        sites it conditions on.
    :param parents: ``site -> parent site names`` (default: each mechanism's
        ``parents``).
    :param deterministic_event_dims: ``site -> event dim`` of ``pyro.deterministic``
        sites; their ``Delta`` gets this event dim (``pyro.deterministic`` defaults to
        the whole value, plate dims included, which breaks batching).

    Example::

        >>> from pyro_causalgen.mechanisms import LocScaleMechanism
        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     return pyro.sample("y", dist.Normal(x, 1.0))
        >>> mech = LocScaleMechanism(parents={"x": ()}, name="y")
        >>> with FlowifyMessenger({"y": mech}):
        ...     tr = pyro.poutine.trace(model).get_trace()
        >>> type(tr.nodes["y"]["fn"]).__name__
        'MechanismDistribution'
    """

    def __init__(
        self,
        mechanisms: Mapping[str, Mechanism],
        parents: Mapping[str, Sequence[str]] | None = None,
        deterministic_event_dims: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.deterministic_event_dims = dict(deterministic_event_dims or {})
        self.mechanisms = dict(mechanisms)
        self.parents = {
            name: tuple(parents[name] if parents is not None else mech.parents)
            for name, mech in self.mechanisms.items()
        }
        self._msgs: dict[str, dict] = {}

    def __enter__(self) -> FlowifyMessenger:
        self._msgs = {}
        return super().__enter__()

    def __exit__(self, *args: Any) -> None:
        self._msgs = {}
        return super().__exit__(*args)

    def _pyro_sample(self, msg: dict) -> None:
        if is_plate_site(msg):
            return
        name = msg["name"]
        mech = self.mechanisms.get(name)
        if mech is not None:
            values = {}
            for parent in self.parents[name]:
                pmsg = self._msgs.get(parent)
                if pmsg is None:
                    raise UnsupportedModelError(
                        f"site '{name}': its parent '{parent}' was not sampled before "
                        "it in this run; the program's structure differs from the "
                        "trial runs flowify() read it from"
                    )
                values[parent] = pmsg["value"]
            msg["fn"] = match_batch(mech(**values), msg["fn"], name)
        elif name in self.deterministic_event_dims and msg["value"] is not None:
            k = self.deterministic_event_dims[name]
            if len(msg["fn"].event_shape) != k:
                fn = dist.Delta(msg["value"], event_dim=k)
                msg["fn"] = fn.mask(False) if _is_masked(msg["fn"]) else fn
        self._msgs[name] = msg


def match_batch(d: MechanismDistribution, fn: Any, name: str) -> MechanismDistribution:
    """Expand a mechanism's distribution ``d`` to the batch shape of ``fn``.

    :raises ShapeError: naming the site, when the event shapes differ or the
        mechanism's batch shape (from its parents) does not broadcast to ``fn``'s.
    """
    if tuple(d.event_shape) != tuple(fn.event_shape):
        raise ShapeError(
            f"site '{name}': the mechanism has event shape {tuple(d.event_shape)} but "
            f"the program's distribution has {tuple(fn.event_shape)}"
        )
    target = torch.Size(fn.batch_shape)
    try:
        shape = torch.broadcast_shapes(d.batch_shape, target)
    except RuntimeError as err:
        raise ShapeError(
            f"site '{name}': the mechanism's batch shape {tuple(d.batch_shape)} (from "
            f"its parents) does not broadcast with the site's {tuple(target)}"
        ) from err
    if shape != target:
        raise ShapeError(
            f"site '{name}': its parents give batch shape {tuple(d.batch_shape)}, "
            f"wider than the site's {tuple(target)}: a parent varies along a plate "
            "that the site is not in"
        )
    return d if d.batch_shape == shape else d.expand(shape)


def _is_masked(fn: Any) -> bool:
    return type(fn).__name__ == "MaskedDistribution"
