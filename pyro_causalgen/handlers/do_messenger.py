"""``do``: hard, stochastic and shift interventions on named sample sites.

The intervened value is produced by ChiRho's effectful ``intervene`` operation, so the
handler composes with ChiRho's world handlers (``TwinWorldCounterfactual``,
``MultiWorldCounterfactual``) and with this package's counterfactual handlers, which
give that operation its multi-world meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from chirho.interventional.ops import intervene
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from pyro_causalgen.errors import CausalModelError, ShapeError, UnknownSiteError

Intervention = Tensor | float | int | dist.Distribution | Callable[[Tensor], Tensor]


def stochastic_site_name(name: str) -> str:
    """Name of the sample site that draws a stochastic intervention on ``name``.

    Example::

        >>> stochastic_site_name("x")
        'do(x)'
    """
    return f"do({name})"


class DoMessenger(Messenger):
    """Replace the value of each named site by its intervention.

    - a tensor or number: hard intervention ``do(X = a)``; per-row values broadcast
      against the site's batch shape, and are moved to the site's device and dtype;
    - a :class:`pyro.distributions.Distribution`: stochastic intervention, drawn at a
      new site named ``"do(X)"`` inside the same plates;
    - any other callable: shift intervention ``X := g(X)`` of the value the mechanism
      produced.

    The mechanism's own site is still recorded (and scored where observed); only the
    value seen downstream changes. A name that the model never samples raises
    :class:`~pyro_causalgen.errors.UnknownSiteError` when the model returns, listing
    the sites it has.

    Example (``do`` builds this messenger)::

        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     return pyro.sample("y", dist.Normal(x, 1e-6))
        >>> y = DoMessenger({"x": 3.0})(model)()
        >>> abs(y.item() - 3.0) < 1e-4
        True

    :param actions: mapping ``site name -> intervention``.
    """

    def __init__(self, actions: Mapping[str, Intervention]) -> None:
        super().__init__()
        if not isinstance(actions, Mapping):
            raise TypeError(
                f"do() expects a mapping of site names, got {type(actions)}"
            )
        self.actions = dict(actions)
        for name, act in self.actions.items():
            if (
                isinstance(act, Tensor)
                and act.is_floating_point()
                and act.isnan().any()
            ):
                raise CausalModelError(f"do(): intervention on '{name}' contains NaN")
        self._seen: list[str] = []

    def __enter__(self) -> DoMessenger:
        self._seen = []
        return super().__enter__()

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        super().__exit__(exc_type, exc_value, traceback)
        if exc_type is None:
            unknown = [n for n in self.actions if n not in self._seen]
            if unknown:
                raise UnknownSiteError(
                    f"do(): the model has no sample site named {unknown}; "
                    f"its sites are {sorted(set(self._seen))}"
                )

    def _pyro_sample(self, msg: dict) -> None:
        if not site_is_subsample(msg):  # plates announce themselves too
            self._seen.append(msg["name"])

    def _pyro_post_sample(self, msg: dict) -> None:
        name = msg["name"]
        if name not in self.actions or msg["infer"].get("_do_not_intervene"):
            return
        value = msg["value"]
        event_dim = len(msg["fn"].event_shape)
        act = _prepare(name, self.actions[name], value, msg["fn"])
        msg["value"] = intervene(value, act, event_dim=event_dim, name=name)


def _prepare(name: str, act: Intervention, value: Tensor, fn: Any) -> Any:
    """Move a hard value to the site's device / dtype, wrap a stochastic one."""
    if isinstance(act, dist.Distribution):
        if tuple(act.event_shape) != tuple(fn.event_shape):
            raise ShapeError(
                f"do(): stochastic intervention on '{name}' has event shape "
                f"{tuple(act.event_shape)}, the site has {tuple(fn.event_shape)}"
            )

        def draw(_: Tensor) -> Tensor:
            return pyro.sample(
                stochastic_site_name(name), act, infer={"_do_not_intervene": True}
            )

        return draw
    if callable(act):
        return act
    act = torch.as_tensor(act, dtype=value.dtype, device=value.device)
    try:
        shape = torch.broadcast_shapes(act.shape, value.shape)
    except RuntimeError as err:
        raise ShapeError(
            f"do(): intervention on '{name}' has shape {tuple(act.shape)}, which does "
            f"not broadcast with the site's shape {tuple(value.shape)}"
        ) from err
    return act.expand(shape)


def do(
    fn: Callable | Mapping[str, Intervention] | None = None,
    actions: Mapping[str, Intervention] | None = None,
    **named_actions: Intervention,
) -> Any:
    """Intervene on sample sites: ``do(model, {"x": 1.0})`` or ``with do(x=1.0):``.

    :param fn: a model to wrap; or the actions mapping when used as a context manager.
    :param actions: mapping ``site name -> intervention`` (see :class:`DoMessenger`).
    :returns: the intervened model, or a :class:`DoMessenger` when ``fn`` is omitted.

    Example::

        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     return pyro.sample("y", dist.Normal(x, 1e-3))
        >>> y = do(model, {"x": 5.0})()
        >>> bool(abs(y - 5.0) < 0.1)
        True
    """
    if isinstance(fn, Mapping):
        fn, actions = None, fn
    merged = {**(actions or {}), **named_actions}
    messenger = DoMessenger(merged)
    return messenger(fn) if fn is not None else messenger
