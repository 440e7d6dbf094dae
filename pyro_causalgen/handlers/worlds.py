"""Named worlds with shared exogenous noise: the machinery of the world handlers.

:class:`WorldsMessenger` is the base of
:class:`~pyro_causalgen.handlers.twin_world.TwinWorldCounterfactual` and
:class:`~pyro_causalgen.handlers.multi_world.MultiWorldCounterfactual`. Under it every
mechanism site ``x ~ p(x | pa)`` of the model is rewritten as

- a noise site ``u(x)`` (see :func:`~pyro_causalgen.handlers.noise.noise_site_name`),
  outside
  every world dim, marked ``infer={"causalgen_noise": True}``: latent ``u ~ p(u)`` when
  ``x`` is not observed, the exact inverse ``u = f^{-1}(x_obs; pa)`` (a deterministic
  site) when it is, or a draw of ``p(u | x_obs)`` for discrete sites;
- the site ``x`` itself, now deterministic: ``x_w = f(u; pa_w)`` in each world ``w``
  (a :class:`WorldValue` whose ``log_prob`` is ``log p(x_obs | pa_factual)`` for an
  observed site and 0 otherwise).

Worlds live in one batch dim of size ``len(worlds)``, allocated to the left of every
plate of the model when the first intervention splits a value, named (index 0 is
``"factual"``) and read with :func:`gather` / :func:`world_value`. A value that is
the same in every world keeps no world dim, so upstream sites cost one evaluation.

Observations are given to the handler (``observations={...}``); ``obs=`` or
``pyro.condition`` on a mechanism site under the handler raise
:class:`~pyro_causalgen.errors.CounterfactualError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import constraints

from pyro_causalgen.errors import CounterfactualError, ShapeError, UnknownSiteError
from pyro_causalgen.handlers.noise import (
    NoiseForm,
    noise_form,
    noise_site_name,
    size_at,
    take,
)

#: Name of the world every counterfactual handler keeps at index 0.
FACTUAL = "factual"
#: Name of the single counterfactual world of the twin-world handler.
COUNTERFACTUAL = "counterfactual"

INFER_NOISE = "causalgen_noise"
INFER_WORLDS = "causalgen_worlds"
INFER_OBSERVED = "causalgen_observed"


@dataclass(frozen=True)
class WorldInfo:
    """Where the worlds live: names (index order) and the batch dim they occupy.

    :param names: world names; ``names[0]`` is ``"factual"``.
    :param dim: negative batch dim of the world axis (to the left of all plates).

    Example::

        >>> info = WorldInfo(("factual", "counterfactual"), -2)
        >>> info.index("counterfactual")
        1
    """

    names: tuple[str, ...]
    dim: int

    def index(self, world: str | int) -> int:
        """Position of ``world`` (a name or an index) along the world dim."""
        if isinstance(world, int):
            if not 0 <= world < len(self.names):
                raise CounterfactualError(f"world index {world} out of {self.names}")
            return world
        if world not in self.names:
            raise CounterfactualError(
                f"unknown world {world!r}; worlds are {list(self.names)}"
            )
        return self.names.index(world)


def gather(
    value: Tensor, world: str | int, info: WorldInfo | None, event_dim: int = 0
) -> Tensor:
    """The slice of ``value`` in ``world``, without the world dim.

    A value with no world dim (or with ``info=None``: no world was ever split) is the
    same in every world and is returned unchanged.

    :param value: ``(*left, K, *plates, *event)`` or ``(*plates, *event)``.
    :param world: a world name (``"factual"``, ``"counterfactual"``, ...) or index.
    :param info: the handler's :class:`WorldInfo` (``handler.world_info``).
    :param event_dim: number of event dims of ``value``.
    :returns: ``(*left, *plates, *event)``.

    Example::

        >>> info = WorldInfo(("factual", "counterfactual"), -2)
        >>> v = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # (K=2 worlds, N=2 units)
        >>> gather(v, "counterfactual", info).tolist()
        [3.0, 4.0]
    """
    if info is None:
        return value
    index = info.index(world)
    pos = info.dim - event_dim
    if value.dim() < -pos:
        return value
    if value.shape[pos] == 1:
        return value.squeeze(pos)
    if value.shape[pos] != len(info.names):
        raise ShapeError(
            f"value of shape {tuple(value.shape)} has size {value.shape[pos]} at the "
            f"world dim {pos}, expected {len(info.names)} worlds {list(info.names)}"
        )
    return value.select(pos, index)


def world_value(trace: Any, site: str, world: str | int) -> Tensor:
    """Read ``site``'s value in ``world`` from a trace of a counterfactual model.

    The trace records the value the site's mechanism produced in each world; for an
    intervened site that is the value *before* its intervention (the value seen
    downstream is the intervention: use
    :attr:`WorldsMessenger.values` or :func:`~pyro_causalgen.counterfactual` for it).

    :param trace: a :class:`pyro.poutine.Trace`.
    :param site: a sample site name.
    :param world: world name or index.

    Example::

        >>> import pyro, pyro.poutine as poutine
        >>> from pyro_causalgen.handlers import TwinWorldCounterfactual, do
        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     return pyro.sample("y", dist.Normal(x, 1.0))
        >>> with TwinWorldCounterfactual(observations={"x": 0.0, "y": 1.0}):
        ...     tr = poutine.trace(do(model, {"x": 2.0})).get_trace()
        >>> float(world_value(tr, "y", "counterfactual"))
        3.0
    """
    if site not in trace.nodes:
        raise UnknownSiteError(f"the trace has no site '{site}'")
    node = trace.nodes[site]
    info = node["infer"].get(INFER_WORLDS)
    event_dim = len(node["fn"].event_shape) if node.get("fn") is not None else 0
    return gather(node["value"], world, info, event_dim)


class WorldValue(TorchDistribution):
    """The deterministic value of a site in every world, with a given log density.

    ``log_prob(value)`` returns ``log_density`` (``log p(x_obs | pa)`` in the factual
    world of an observed site, 0 elsewhere), broadcast to the batch shape; it does not
    check ``value`` (the handler that builds it owns the value).

    :param v: the value, ``(*batch, *event)``.
    :param log_density: broadcastable to ``batch``.
    :param event_dim: number of event dims of ``v``.
    :param support: support of the original distribution.

    Example::

        >>> d = WorldValue(torch.ones(2, 3), torch.tensor(-1.0), event_dim=1)
        >>> d.log_prob(d.sample()).tolist()
        [-1.0, -1.0]
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(
        self,
        v: Tensor,
        log_density: Tensor | float = 0.0,
        event_dim: int = 0,
        support: constraints.Constraint | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self.v = v
        batch = v.shape[: v.dim() - event_dim]
        event = v.shape[v.dim() - event_dim :]
        ld = torch.as_tensor(log_density, device=v.device)
        if not ld.is_floating_point():
            ld = ld.float()
        self.log_density = ld
        self._support = support if support is not None else constraints.real
        super().__init__(batch, event, validate_args=False)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return self._support

    def expand(self, batch_shape: Any, _instance: Any = None) -> WorldValue:
        batch_shape = torch.Size(batch_shape)
        event = self.event_shape
        return WorldValue(
            self.v.expand(batch_shape + event),
            self.log_density.expand(batch_shape),
            len(event),
            self._support,
        )

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        return self.v.expand(torch.Size(sample_shape) + self.v.shape)

    def log_prob(self, value: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(
            self.batch_shape, value.shape[: value.dim() - len(self.event_shape)]
        )
        return self.log_density.expand(shape)


# ------------------------------------------------------------------ the messenger
Intervention = Any


class WorldsMessenger(Messenger):
    """Base of the counterfactual handlers: shared noise, named worlds, splitting.

    :param worlds: names of the non-factual worlds, in order (index 1, 2, ...).
    :param actions: per world, ``site -> intervention`` applied by the handler itself
        (tensor / number: hard; ``Distribution``: stochastic, drawn at ``do(x)``, or
        ``do(x)[world]`` in a multi-world handler; other callable: shift).
    :param observations: ``site -> observed value`` for the factual world; each value
        broadcasts against the site's plates, ``(*plates, *event)``.
    :param max_plate_nesting: the number of plate dims of the model; worlds go at
        ``-(max_plate_nesting + 1)``. By default it is the deepest plate nesting seen
        before the first world split, and a deeper plate after it raises.

    Interventions from an enclosed ``do`` (this package's or ChiRho's) apply in every
    non-factual world.

    Its subclasses are the user-facing handlers, e.g. the twin world::

        >>> from pyro_causalgen.handlers import TwinWorldCounterfactual
        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     return pyro.sample("y", dist.Normal(x, 1.0))
        >>> with TwinWorldCounterfactual(interventions={"x": 1.0}):
        ...     y = model()
        >>> y.shape  # (factual, counterfactual) on the left of the plates
        torch.Size([2])
    """

    def __init__(
        self,
        worlds: Sequence[str],
        actions: Mapping[str, Mapping[str, Intervention]] | None = None,
        observations: Mapping[str, Any] | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        super().__init__()
        names = (FACTUAL, *worlds)
        if len(set(names)) != len(names):
            raise CounterfactualError(f"world names must be distinct, got {names}")
        self.world_names: tuple[str, ...] = names
        self.actions = {w: dict(a) for w, a in (actions or {}).items()}
        unknown = sorted(set(self.actions) - set(worlds))
        if unknown:
            raise CounterfactualError(f"interventions for unknown worlds {unknown}")
        self.observations = dict(observations or {})
        self.max_plate_nesting = max_plate_nesting
        self._reset()

    # state -----------------------------------------------------------------------
    def _reset(self) -> None:
        self.world_info: WorldInfo | None = None
        self.values: dict[str, Tensor] = {}
        self.noise: dict[str, Tensor] = {}
        self.event_dims: dict[str, int] = {}
        self.latent_noise: list[str] = []
        self._depth = 0
        self._seen: list[str] = []
        self._pending: dict[str, Tensor] = {}
        self._split_out: dict[str, list[Tensor]] = {}
        self._passthrough: set[str] = set()

    def __enter__(self) -> WorldsMessenger:
        self._reset()
        return super().__enter__()

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        super().__exit__(exc_type, exc_value, traceback)
        if exc_type is not None:
            return
        seen = set(self._seen)
        for label, names in (
            ("observation", list(self.observations)),
            ("intervention", [n for a in self.actions.values() for n in a]),
        ):
            unknown = sorted({n for n in names if n not in seen})
            if unknown:
                raise UnknownSiteError(
                    f"{type(self).__name__}: {label} on {unknown}, but the model has "
                    f"no such sample site; its sites are {sorted(seen)}"
                )

    @property
    def num_worlds(self) -> int:
        return len(self.world_names)

    def gather(self, value: Tensor, world: str | int, event_dim: int = 0) -> Tensor:
        """``value`` in ``world`` (see :func:`gather`), with this handler's worlds."""
        if self.world_info is None:
            WorldInfo(self.world_names, -1).index(world)  # validates the name
        return gather(value, world, self.world_info, event_dim)

    def world_values(self, world: str | int) -> dict[str, Tensor]:
        """Every site's value as seen downstream (after interventions) in ``world``."""
        return {
            n: self.gather(v, world, self.event_dims[n]) for n, v in self.values.items()
        }

    # worlds ----------------------------------------------------------------------
    def _allocate(self) -> WorldInfo:
        if self.world_info is None:
            depth = self._depth
            if self.max_plate_nesting is not None:
                if self.max_plate_nesting < depth:
                    raise ShapeError(
                        f"max_plate_nesting={self.max_plate_nesting} but the model "
                        f"already nests {depth} plates"
                    )
                depth = self.max_plate_nesting
            self.world_info = WorldInfo(self.world_names, -(depth + 1))
        return self.world_info

    def _track_plates(self, msg: dict) -> None:
        depth = max(
            (
                -f.dim
                for f in msg["cond_indep_stack"]
                if f.vectorized and f.dim is not None
            ),
            default=0,
        )
        if self.world_info is not None and depth >= -self.world_info.dim:
            raise ShapeError(
                f"site '{msg['name']}' is inside {depth} nested plates, which reach "
                "the "
                f"world dim {self.world_info.dim}; pass max_plate_nesting={depth} to "
                f"{type(self).__name__}"
            )
        self._depth = max(self._depth, depth)

    def _mask(self, worlds: Sequence[int], ref: Tensor, event_dim: int) -> Tensor:
        info = self._allocate()
        mask = torch.zeros(self.num_worlds, dtype=torch.bool, device=ref.device)
        mask[list(worlds)] = True
        return mask.reshape((-1,) + (1,) * (-info.dim - 1 + event_dim))

    def _split(
        self,
        name: str | None,
        obs: Tensor,
        acts: Mapping[int, Intervention],
        event_dim: int,
    ) -> Tensor:
        """``obs`` with each world ``w`` in ``acts`` replaced by ``acts[w]``."""
        out = obs
        for w, act in acts.items():
            value = self._action_value(name, out, act, w)
            mask = self._mask([w], value, event_dim)
            out = torch.where(mask, value, out)
        if name is not None:
            self._split_out.setdefault(name, []).append(out)
            self.values[name] = out
        return out

    def _action_value(self, name: str | None, obs: Tensor, act: Any, world: int) -> Any:
        if isinstance(act, tuple):  # ChiRho-style multiple acts: the last one
            act = act[-1]
        if isinstance(act, dist.Distribution):
            site = f"do({name})"
            if sum(1 for a in self.actions.values() if name in a) > 1:
                site = f"do({name})[{self.world_names[world]}]"
            return pyro.sample(site, act, infer={"_do_not_intervene": True})
        if callable(act):
            return act(obs)
        return torch.as_tensor(act, dtype=obs.dtype, device=obs.device)

    # effect handlers -------------------------------------------------------------
    def _pyro_intervene(self, msg: dict) -> None:
        obs, act = msg["args"][0], msg["args"][1]
        if act is None or not isinstance(obs, Tensor):
            return
        kwargs = msg["kwargs"]
        worlds = range(1, self.num_worlds)
        name = msg.get("name") or kwargs.get("name")
        msg["value"] = self._split(
            name, obs, {w: act for w in worlds}, kwargs.get("event_dim", 0)
        )
        msg["done"] = True
        msg["stop"] = True

    def _pyro_sample(self, msg: dict) -> None:
        self._track_plates(msg)
        if site_is_subsample(msg):
            return
        infer = msg["infer"]
        if infer.get(INFER_NOISE) or infer.get("_do_not_intervene"):
            return
        name = msg["name"]
        self._seen.append(name)
        fn = msg["fn"]
        if msg["is_observed"]:
            if infer.get("_deterministic") or _is_deterministic(fn):
                if name in self.observations:
                    raise CounterfactualError(
                        f"site '{name}' is deterministic (pyro.deterministic or a "
                        "reparameterised site); observe the sites it is computed from"
                    )
                self._passthrough.add(name)
                return
            raise CounterfactualError(
                f"site '{name}' is observed with obs= or pyro.condition inside "
                f"{type(self).__name__}; the factual world would be conditioned "
                "without abducting its noise. Pass observations to the handler "
                "(observations={...}) or to pyro_causalgen.counterfactual()"
            )
        form = noise_form(fn, name)
        value, log_density, u = self._site(name, fn, form)
        self.noise[name] = u
        event_dim = form.event_dim
        self.event_dims[name] = event_dim
        self.values[name] = value
        msg["value"] = value
        msg["fn"] = WorldValue(value, log_density, event_dim, fn.support)
        msg["is_observed"] = True
        msg["infer"] = {**infer, INFER_WORLDS: self.world_info}
        msg["infer"][INFER_OBSERVED] = name in self.observations
        self._pending[name] = value

    def _pyro_post_sample(self, msg: dict) -> None:
        name = msg["name"]
        if name in self._passthrough:  # deterministic site: record its value
            self.values[name] = msg["value"]
            self.event_dims[name] = len(msg["fn"].event_shape)
            return
        expected = self._pending.pop(name, None)
        if expected is None:
            return
        value = msg["value"]
        if value is not expected and not any(
            value is v for v in self._split_out.get(name, ())
        ):
            raise CounterfactualError(
                f"site '{name}' was given a value by a handler outside "
                f"{type(self).__name__} (pyro.condition, replay or obs?); pass "
                "observations to the handler or to pyro_causalgen.counterfactual()"
            )
        acts = {
            self.world_names.index(w): a[name]
            for w, a in self.actions.items()
            if name in a
        }
        if acts:
            msg["value"] = self._split(name, value, acts, self.event_dims[name])
        msg["infer"][INFER_WORLDS] = self.world_info

    # one site --------------------------------------------------------------------
    def _site(
        self, name: str, fn: Any, form: NoiseForm
    ) -> tuple[Tensor, Tensor | float, Tensor]:
        """Sample or abduct the noise of one site; return (value, log density, u)."""
        info = self.world_info
        pos = info.dim if info is not None else None
        noise_batch = _without_world(fn.batch_shape, pos)
        obs = self.observations.get(name)
        if obs is None:
            u = pyro.sample(
                noise_site_name(name),
                form.noise_dist(noise_batch),
                infer={INFER_NOISE: True},
            )
            self.latent_noise.append(noise_site_name(name))
            if pos is not None and form.world_size(pos) is None:
                u = _expand_world(u, pos - len(form.noise_event_shape), self.num_worlds)
            return form.predict(u), 0.0, u

        obs = self._prepare_obs(name, obs, fn, form, noise_batch)
        k = form.world_size(pos) if pos is not None else 1
        if k == 1:  # the site's parameters are the same in every world
            u, lp = _abduct(form, obs)
            u = self._record_noise(name, u, form)
            return obs, lp, u
        assert info is not None and pos is not None
        factual = form.select(pos, slice(0, 1))
        rest = form.select(pos, slice(1, None))
        event_dim = form.event_dim
        if factual is not None and rest is not None:
            u, lp = _abduct(factual, obs)
            u = _squeeze_world(u, pos - len(form.noise_event_shape))
            lp = _squeeze_world(lp, pos)
            u = self._record_noise(name, u, form)
            x_rest = rest.predict(u)
        else:  # parameters that cannot be sliced: evaluate all worlds, keep world 0
            wide = _expand_world(obs, pos - event_dim, self.num_worlds)
            u_all, lp_all = _abduct(form, wide)
            u = take(u_all, pos - len(form.noise_event_shape), slice(0, 1))
            u = _squeeze_world(u, pos - len(form.noise_event_shape))
            lp = _squeeze_world(take(lp_all, pos, slice(0, 1)), pos)
            u = self._record_noise(name, u, form)
            k_noise = pos - len(form.noise_event_shape)
            x_all = form.predict(_expand_world(u, k_noise, self.num_worlds))
            x_rest = take(x_all, pos - event_dim, slice(1, None))
        x_rest = x_rest.to(obs.dtype)
        batch = torch.broadcast_shapes(
            x_rest.shape[: x_rest.dim() - event_dim],
            _with_world(obs.shape[: obs.dim() - event_dim], pos, self.num_worlds - 1),
        )
        event = obs.shape[obs.dim() - event_dim :]
        x_rest = x_rest.expand(batch + event)
        first = _with_world(batch, pos, 1)
        value = torch.cat([obs.expand(first + event), x_rest], dim=pos - event_dim)
        factual_mask = self._mask([0], value, 0)
        lp_t = torch.as_tensor(
            lp, dtype=value.dtype if value.is_floating_point() else None
        )
        log_density = torch.where(factual_mask, lp_t, torch.zeros_like(lp_t))
        return value, log_density, u

    def _record_noise(self, name: str, u: Tensor, form: NoiseForm) -> Tensor:
        k = len(form.noise_event_shape)
        return pyro.sample(
            noise_site_name(name),
            dist.Delta(u, event_dim=k).mask(False),
            obs=u,
            infer={INFER_NOISE: True, "_deterministic": True},
        )

    def _prepare_obs(
        self, name: str, obs: Any, fn: Any, form: NoiseForm, noise_batch: torch.Size
    ) -> Tensor:
        ref = form.ref
        dtype = form.value_dtype
        obs = torch.as_tensor(obs, device=ref.device)
        if form.discrete and dtype == torch.long:
            if obs.is_floating_point() and not torch.equal(obs, obs.round()):
                raise ShapeError(
                    f"observation of discrete site '{name}' is not integer"
                )
        obs = obs.to(dtype=dtype, device=ref.device)
        target = noise_batch + fn.event_shape
        try:
            shape = torch.broadcast_shapes(obs.shape, target)
        except RuntimeError as err:
            raise ShapeError(
                f"observation of site '{name}' has shape {tuple(obs.shape)}, which "
                f"does not broadcast with the site's shape {tuple(target)}"
            ) from err
        if len(shape) > len(target) or any(
            s != t for s, t in zip(shape[len(shape) - len(target) :], target) if t != 1
        ):
            raise ShapeError(
                f"observation of site '{name}' has shape {tuple(obs.shape)}; the site "
                f"has shape {tuple(target)} (plates + event)"
            )
        return obs.expand(shape)


def _is_deterministic(fn: Any) -> bool:
    base = fn
    while hasattr(base, "base_dist") and not isinstance(base, dist.Delta):
        base = base.base_dist
    return isinstance(base, (dist.Delta, WorldValue)) or type(fn).__name__ == "Unit"


def _abduct(form: NoiseForm, x: Tensor) -> tuple[Tensor, Tensor]:
    return form.abduct(x) if form.invertible else form.posterior_sample(x)


def _without_world(shape: torch.Size, pos: int | None) -> torch.Size:
    out = list(shape)
    if pos is not None and len(out) >= -pos:
        out[pos] = 1
    while out and out[0] == 1:
        out.pop(0)
    return torch.Size(out)


def _with_world(shape: torch.Size, pos: int, k: int) -> torch.Size:
    out = [1] * max(0, -pos - len(shape)) + list(shape)
    out[pos] = k
    return torch.Size(out)


def _expand_world(t: Tensor, pos: int, k: int) -> Tensor:
    """View ``t`` with size ``k`` at negative dim ``pos`` (adding leading dims)."""
    if t.dim() < -pos:
        t = t.reshape((1,) * (-pos - t.dim()) + tuple(t.shape))
    if t.shape[pos] == k:
        return t
    shape = list(t.shape)
    shape[pos] = k
    return t.expand(shape)


def _squeeze_world(t: Tensor | float, pos: int) -> Tensor | float:
    """Drop the (size-1) world dim and then leading singleton dims."""
    if not isinstance(t, Tensor) or t.dim() < -pos:
        return t
    t = t.squeeze(pos) if t.shape[pos] == 1 else t
    while t.dim() > 0 and t.shape[0] == 1 and t.dim() > -pos - 1:
        t = t.squeeze(0)
    return t


__all__ = [
    "COUNTERFACTUAL",
    "FACTUAL",
    "INFER_NOISE",
    "WorldInfo",
    "WorldValue",
    "WorldsMessenger",
    "gather",
    "size_at",
    "world_value",
]
