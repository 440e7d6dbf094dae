"""Read a Pyro program's mechanism graph from trial runs with provenance tracking.

Each trial runs the program once with every sampled (or observed, or deterministic)
value wrapped in a :class:`~pyro_causalgen.flowify.tracking.TrackedTensor`; a site's
*parents* are the sites whose values its distribution's parameters were computed from
(direct dependencies only, as in :func:`pyro.infer.inspect.get_dependencies`, except
that observed and ``pyro.deterministic`` sites count as parents too). Several trials
with different draws must agree: a program whose sites or parent sets change with the
draws, or that turns a sampled value into a Python ``bool`` / number (the usual way to
branch on it), is rejected with :class:`UnsupportedModelError` naming the site.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import constraints

from pyro_causalgen.flowify.errors import UnsupportedModelError
from pyro_causalgen.flowify.tracking import (
    Escape,
    TrackedTensor,
    provenance,
    record_escapes,
    untrack,
)

Shape = tuple[int, ...]


@dataclass
class SiteInfo:
    """What one trial run saw at a sample site.

    :param name: the site name.
    :param parents: names of the sites its distribution depends on, in program order.
    :param event_shape: the site's event shape.
    :param batch_shape: the distribution's batch shape in the trial run (plates).
    :param plates: names of the vectorised plates the site sits in.
    :param observed: whether the program observes it (``obs=``).
    :param deterministic: ``pyro.deterministic`` (or ``Delta``) site.
    :param fn: the distribution the program built in the trial run.

    Example::

        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     pyro.sample("y", dist.Normal(2 * x, 1.0).expand([3]).to_event(1))
        >>> info = discover_structure(model)["y"]
        >>> info.parents, info.event_shape, info.observed
        (('x',), (3,), False)
    """

    name: str
    parents: tuple[str, ...]
    event_shape: Shape
    batch_shape: Shape
    plates: tuple[str, ...]
    observed: bool
    deterministic: bool
    fn: Any = field(repr=False)

    def signature(self) -> tuple:
        """What must not change between runs."""
        return (
            self.parents,
            self.event_shape,
            self.plates,
            self.observed,
            self.deterministic,
            type(base_distribution(self.fn)).__name__,
        )


def base_distribution(fn: Any) -> Any:
    """Strip ``Independent`` / ``Expanded`` / ``Masked`` wrappers from ``fn``."""
    while type(fn).__name__ in (
        "Independent",
        "ExpandedDistribution",
        "MaskedDistribution",
    ):
        fn = fn.base_dist
    return fn


def is_deterministic(msg: Mapping[str, Any]) -> bool:
    """``pyro.deterministic`` sites and ``Delta`` sample sites."""
    if msg["infer"].get("_deterministic", False):
        return True
    return type(base_distribution(msg["fn"])).__name__ == "Delta"


def is_plate_site(msg: Mapping[str, Any]) -> bool:
    return site_is_subsample(msg)


class _TrialMessenger(Messenger):
    """Tag every sampled value with its site; record each site's parents."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: dict[str, SiteInfo] = {}

    def _pyro_post_sample(self, msg: dict) -> None:
        if is_plate_site(msg):
            return
        name, fn = msg["name"], msg["fn"]
        tracked, value = msg["value"], untrack(msg["value"])
        if is_deterministic(msg):  # its value is the function of its parents
            deps = provenance(tracked)
        else:
            scored = fn.base_dist if type(fn).__name__ == "MaskedDistribution" else fn
            try:
                deps = provenance(scored.log_prob(value))
            except Exception:  # log_prob fails on its own draw: read the parameters
                deps = provenance(list(vars(fn).values()))
        deps = deps - {name}
        order = list(self.sites)
        parents = tuple(sorted(deps & set(order), key=order.index))
        event_shape, batch_shape = tuple(fn.event_shape), tuple(fn.batch_shape)
        if is_deterministic(msg):
            # pyro.deterministic's default event_dim covers the plate dims too; the
            # event is what is left of the value right of the site's plates
            depth = max(
                (-f.dim for f in msg["cond_indep_stack"] if f.vectorized), default=0
            )
            shape = tuple(value.shape)
            k = max(len(shape) - depth, 0)
            event_shape, batch_shape = shape[len(shape) - k :], shape[: len(shape) - k]
        self.sites[name] = SiteInfo(
            name=name,
            parents=parents,
            event_shape=event_shape,
            batch_shape=batch_shape,
            plates=tuple(f.name for f in msg["cond_indep_stack"] if f.vectorized),
            observed=bool(msg["is_observed"]) and not is_deterministic(msg),
            deterministic=is_deterministic(msg),
            fn=fn,
        )
        msg["value"] = TrackedTensor.wrap(value, frozenset({name}))


def trace_structure(
    model: Callable, model_args: Sequence = (), model_kwargs: Mapping | None = None
) -> tuple[dict[str, SiteInfo], list[Escape]]:
    """Run ``model`` once with provenance tracking.

    :returns: ``site -> SiteInfo`` in program order, and the sampled values the
        program converted to Python objects.
    """
    trial = _TrialMessenger()
    with record_escapes() as escapes, trial:
        model(*model_args, **(model_kwargs or {}))
    return trial.sites, escapes


def _escape_error(escapes: list[Escape]) -> UnsupportedModelError:
    first = escapes[0]
    sites = sorted(set().union(*(e.sites for e in escapes)))
    where = sorted({f"{e.op} at {e.where}" for e in escapes})
    return UnsupportedModelError(
        f"the program turns the value of site(s) {sites} into a Python object "
        f"({'; '.join(where[:3])}): control flow that depends on sampled values "
        "cannot be represented by a fixed set of mechanisms; compute with tensor ops "
        f"(e.g. torch.where) instead of branching on '{sorted(first.sites)[0]}'"
    )


def discover_structure(
    model: Callable,
    model_args: Sequence = (),
    model_kwargs: Mapping | None = None,
    trials: int = 3,
    seed: int | None = None,
) -> dict[str, SiteInfo]:
    """Read the mechanism graph of ``model`` from ``trials`` runs with fresh draws.

    The global RNG state is left as it was (the runs happen in a forked RNG, seeded
    with ``seed`` when given).

    :param model: a Pyro program.
    :param model_args: positional arguments for the trial runs.
    :param model_kwargs: keyword arguments for the trial runs (e.g. ``{"n": 8}``).
    :param trials: number of runs to compare (at least 1).
    :param seed: seed of the trial runs' draws.
    :returns: ``site -> SiteInfo`` in program order.
    :raises UnsupportedModelError: naming the site, when the program branches on a
        sampled value, when sites or parent sets differ between runs, or when a site
        depends on a value inside a plate that it is not in.

    Example::

        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     y = pyro.sample("y", dist.Normal(2 * x, 1.0))
        ...     return pyro.sample("z", dist.Normal(x + y, 1.0))
        >>> {k: s.parents for k, s in discover_structure(model).items()}
        {'x': (), 'y': ('x',), 'z': ('x', 'y')}
    """
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    runs = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        with pyro.validation_enabled(False):
            if seed is not None:
                torch.manual_seed(seed)
            for _ in range(trials):
                sites, escapes = trace_structure(model, model_args, model_kwargs)
                if escapes:
                    raise _escape_error(escapes)
                runs.append(sites)
    first = runs[0]
    for other in runs[1:]:
        changed = sorted(set(first) ^ set(other))
        if changed:
            raise UnsupportedModelError(
                f"site(s) {changed} are sampled in some runs of the program but not "
                "in others: its control flow depends on sampled values (or on "
                "randomness outside pyro.sample), which a fixed set of mechanisms "
                "cannot represent"
            )
        for name, info in first.items():
            a, b = info.signature(), other[name].signature()
            if a != b:
                what = "parents" if a[0] != b[0] else "shape, plates or distribution"
                detail = (
                    f"{list(a[0])} in one run and {list(b[0])} in another"
                    if a[0] != b[0]
                    else f"{a[1:]} vs {b[1:]}"
                )
                raise UnsupportedModelError(
                    f"site '{name}': its {what} change between runs of the program "
                    f"({detail}); a fixed mechanism cannot represent it"
                )
    for info in first.values():
        for parent in info.parents:
            outside = sorted(set(first[parent].plates) - set(info.plates))
            if outside:
                raise UnsupportedModelError(
                    f"site '{info.name}' depends on '{parent}' across plate(s) "
                    f"{outside} ('{parent}' is inside, '{info.name}' is not): a "
                    "mechanism's context must broadcast to its site's plates"
                )
    return first


#: Supports that a flow mechanism handles, by the name :class:`Mechanism` uses.
def flow_support(fn: Any) -> str | None:
    """``"real"``, ``"positive"`` or ``"unit_interval"`` for a flowable support.

    Non-negative supports (``Gamma``, ``Exponential``, ``HalfNormal``) count as
    positive: the boundary has probability zero. Intervals other than ``[0, 1]`` and
    every other constraint return ``None``.

    Example::

        >>> flow_support(dist.Gamma(2.0, 1.0)), flow_support(dist.Beta(1.0, 1.0))
        ('positive', 'unit_interval')
    """
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is constraints.real:
        return "real"
    if isinstance(support, constraints.greater_than | constraints.greater_than_eq):
        bound = support.lower_bound
        return "positive" if _is_number(bound, 0.0) else None
    if isinstance(support, constraints.interval | constraints.half_open_interval):
        lo, hi = support.lower_bound, support.upper_bound
        return "unit_interval" if _is_number(lo, 0.0) and _is_number(hi, 1.0) else None
    if type(support) is type(constraints.real):
        return "real"
    return None


def _is_number(x: Any, target: float) -> bool:
    if isinstance(x, torch.Tensor):
        return x.numel() > 0 and bool((untrack(x) == target).all())
    return float(x) == target


def has_gumbel_max(fn: Any) -> bool:
    """Whether a discrete distribution has a Gumbel-max noise form.

    ``Bernoulli`` and ``Categorical`` (possibly ``Independent``, expanded or masked)
    do; ``Poisson``, ``Binomial``, ``Geometric``, ``OneHotCategorical`` and other
    count or structured laws do not.

    Example::

        >>> has_gumbel_max(dist.Bernoulli(0.3)), has_gumbel_max(dist.Poisson(2.0))
        (True, False)
    """
    base = base_distribution(fn)
    if isinstance(base, torch.distributions.OneHotCategorical):
        return False
    return isinstance(
        base, torch.distributions.Bernoulli | torch.distributions.Categorical
    )
