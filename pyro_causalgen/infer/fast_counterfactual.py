"""Fast path of :func:`~pyro_causalgen.counterfactual` for fully observed builder SCMs.

For a :class:`~pyro_causalgen.StructuralCausalModel` whose sites are all stacked scalar
flows (:class:`~pyro_causalgen.mechanisms.stacked.StackedFlows`, the builder's default
for ``"nsf"`` / ``"maf"``) and whose every site is observed, the twin-world
counterfactual needs no Pyro handler: the noise of every site is the exact inverse of
its flow, and only the descendants of the intervened sites change. :func:`fast_twin`
computes

1. abduction, ``u_s = f_s^{-1}(x_s; pa_s)`` for the sites whose noise is used (the
   descendants of the targets that are not targets themselves), in one batched
   hyper-network and spline pass per stack and per context width;
2. action, ``x'_t = a_t`` for each target ``t``;
3. prediction, ``x'_s = f_s(u_s; pa'_s)`` for those descendants, in topological order.

For every value it returns it performs the same floating-point operations as the
handler path of :class:`~pyro_causalgen.handlers.TwinWorldCounterfactual` on each row
(the same hyper-network weights sliced the same way, the same spline code; it skips
log densities, which ``counterfactual`` does not return), so up to :data:`ROW_BLOCK`
rows its values are equal to the handler's, bit for bit;
``tests/test_counterfactual_fast.py`` asserts that. Larger batches run in blocks of
:data:`ROW_BLOCK` rows, where a matrix product over fewer rows may sum in another
order (float32 differences of order 1e-6).

:func:`fast_twin` returns ``None`` (and :func:`~pyro_causalgen.counterfactual` runs
the generic handler) unless every condition holds:

- ``model`` is a :class:`~pyro_causalgen.StructuralCausalModel` with the builder's
  ``forward`` and no forward hooks, all of whose sites are in stacks, called as
  ``model(n)``;
- no Pyro handler is active around the call (outer handlers must see the sites);
- every site is observed, each observation a tensor of shape ``(n,)`` with the model's
  dtype and device;
- every intervention is a number or a tensor that broadcasts to ``(n,)`` (hard
  interventions, per-row values allowed) on a site of the model; distributions,
  shifts (callables) and multi-world interventions go to the handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pyro.poutine.runtime import _PYRO_STACK
from torch import Tensor

from pyro_causalgen.handlers.worlds import COUNTERFACTUAL, FACTUAL
from pyro_causalgen.mechanisms.distribution import ToNoiseTransform
from pyro_causalgen.mechanisms.spline import rqs_flow, rqs_table
from pyro_causalgen.mechanisms.stacked import StackedFlowMechanism, StackedFlows
from pyro_causalgen.scm import StructuralCausalModel

#: Rows (sites x units) per batched abduction call: batching saves per-call overhead
#: for small ``n``; beyond this the working set leaves the cache and per-site calls
#: are as fast.
_BATCH_ROWS = 1 << 15


#: Rows per block: the hyper-network activations and spline tables of one block stay
#: cache-sized (about 20 % faster than one pass at 1e5 rows of a 10-node chain); half
#: of ``_BATCH_ROWS``, so that ``stacked_noise`` batches at least two sites.
ROW_BLOCK = _BATCH_ROWS // 2


def fast_twin(
    model: Any,
    observations: Mapping[str, Any],
    interventions: Mapping[str, Any],
    args: tuple,
    kwargs: Mapping[str, Any],
) -> dict[str, dict[str, Tensor]] | None:
    """Twin-world counterfactual of a fully observed stacked builder model, or ``None``.

    :param model: the model passed to :func:`~pyro_causalgen.counterfactual`.
    :param observations: ``site -> (n,)`` factual values.
    :param interventions: ``site -> value``, a number or a tensor broadcasting to
        ``(n,)``.
    :param args: positional arguments of the model call (``(n,)``).
    :param kwargs: keyword arguments of the model call (``{}`` or ``{"n": n}``).
    :returns: ``{"factual": {site: (n,)}, "counterfactual": {site: (n,)}}``, equal to
        the handler path's result, or ``None`` when the fast path does not apply (see
        the module docstring).
    """
    if _PYRO_STACK or not isinstance(model, StructuralCausalModel):
        return None
    if type(model).forward is not StructuralCausalModel.forward or not model.stacks:
        return None
    if model._forward_hooks or model._forward_pre_hooks:  # hooks must see the call
        return None
    n = _units(args, kwargs)
    if n is None:
        return None
    order = model.order
    views: dict[str, StackedFlowMechanism] = {}
    for group in model.stacks:
        views.update(group.views.items())  # type: ignore[arg-type]
    if len(views) != len(order) or set(observations) != set(order):
        return None
    ref = next(iter(views.values()))._zero
    shape = torch.Size((n,))
    for obs in observations.values():
        if not (
            isinstance(obs, Tensor)
            and obs.shape == shape
            and obs.dtype == ref.dtype
            and obs.device == ref.device
        ):
            return None
    actions: dict[str, Tensor] = {}
    for name, act in interventions.items():
        if name not in views:
            return None
        if isinstance(act, Tensor):
            if act.device != ref.device:
                return None
        elif not isinstance(act, (int, float)) or isinstance(act, bool):
            return None
        value = torch.as_tensor(act, dtype=ref.dtype, device=ref.device)
        try:
            if torch.broadcast_shapes(value.shape, shape) != shape:
                return None
        except RuntimeError:
            return None
        actions[name] = value.expand(shape).clone()

    changed = _descendants(model.parents, order, set(actions))
    blocks = [
        _twin_block(
            model,
            views,
            {k: v[start : start + ROW_BLOCK] for k, v in observations.items()},
            {k: v[start : start + ROW_BLOCK] for k, v in actions.items()},
            changed,
        )
        for start in range(0, n, ROW_BLOCK)
    ]
    if len(blocks) == 1:
        cf = blocks[0]
    else:
        cf = {name: torch.cat([b[name] for b in blocks]) for name in order}
    factual = {name: observations[name] for name in order}
    return {FACTUAL: factual, COUNTERFACTUAL: cf}


def _twin_block(
    model: StructuralCausalModel,
    views: Mapping[str, StackedFlowMechanism],
    observations: Mapping[str, Tensor],
    actions: Mapping[str, Tensor],
    changed: set[str],
) -> dict[str, Tensor]:
    """Counterfactual values of one block of rows: ``site -> (rows,)``."""
    noise: dict[str, Tensor] = {}
    for group in model.stacks:
        sites = [s for s in group.sites if s in changed and s not in actions]
        if sites:
            noise.update(stacked_noise(group, observations, sites))
    cf: dict[str, Tensor] = {}
    for name in model.order:
        if name in actions:
            cf[name] = actions[name]
        elif name in changed:
            cf[name] = _predict(views[name], cf, observations, noise[name])
        else:
            cf[name] = observations[name]
    return cf


def _units(args: tuple, kwargs: Mapping[str, Any]) -> int | None:
    """The ``n`` of a ``model(n)`` / ``model(n=n)`` call; ``None`` otherwise."""
    if args and not kwargs and len(args) == 1:
        n = args[0]
    elif not args and set(kwargs) == {"n"}:
        n = kwargs["n"]
    else:
        return None
    if isinstance(n, bool) or not isinstance(n, int):
        return None
    return n


def _descendants(
    parents: Mapping[str, list[str]], order: list[str], targets: set[str]
) -> set[str]:
    """``targets`` and every site downstream of one of them."""
    out = set(targets)
    for name in order:
        if any(p in out for p in parents[name]):
            out.add(name)
    return out


def _predict(
    view: StackedFlowMechanism,
    cf: Mapping[str, Tensor],
    observations: Mapping[str, Any],
    u: Tensor,
) -> Tensor:
    """``f(u; pa')`` with the counterfactual parents, as ``MechanismForm.predict``.

    :param u: ``(n,)`` noise; returns ``(n,)``.
    """
    pa = {p: cf[p] if p in cf else observations[p] for p in view.parents}
    context = view.context(**pa)
    std = None if context is None else (context - view.context_loc) / view.context_scale
    flow = view.flow_transform(std)
    to_noise = ToNoiseTransform(view.value_loc, view.value_scale, flow, 0, None)
    return to_noise.inv(u)


def stacked_noise(
    group: StackedFlows, data: Mapping[str, Tensor], sites: list[str]
) -> dict[str, Tensor]:
    """Exact noise ``u_s = f_s^{-1}(x_s; pa_s)`` of ``sites`` of one stack, batched.

    Sites with a context are evaluated together per context width (one
    :func:`torch.baddbmm` per hyper-network layer and one spline call per flow layer
    for all of them), with the weights sliced as
    :meth:`StackedFlows.site_phi` slices them, so each row's noise is bitwise the
    noise of the per-site mechanism; root sites go through their view.

    :param group: the stack.
    :param data: raw values, ``(n,)`` per site (and its parents).
    :param sites: sites of ``group`` to abduct.
    :returns: ``site -> (n,)`` noise.
    """
    out: dict[str, Tensor] = {}
    by_width: dict[int, list[str]] = {}
    for s in sites:
        view: StackedFlowMechanism = group.views[s]  # type: ignore[assignment]
        if view.context_features == 0:
            out[s] = view.at_context(None).to_noise(data[s])
        else:
            by_width.setdefault(view.context_features, []).append(s)
    n = next(iter(data.values())).shape[0]
    chunk = max(1, _BATCH_ROWS // max(n, 1))
    for width, same in by_width.items():
        for start in range(0, len(same), chunk):
            out.update(_noise_batch(group, data, same[start : start + chunk], width))
    return out


def _noise_batch(
    group: StackedFlows, data: Mapping[str, Tensor], names: list[str], width: int
) -> dict[str, Tensor]:
    """Noise of the context sites ``names`` of ``group``, all of context ``width``.

    :returns: ``site -> (n,)`` noise.
    """
    L, G = group.transforms, len(names)
    views: list[StackedFlowMechanism] = [group.views[s] for s in names]  # type: ignore[misc]
    slots = [group._slot[s] for s in names]
    consecutive = slots == list(range(slots[0], slots[0] + G))

    def networks(per_site: int) -> slice | Tensor:
        """The hyper-networks of ``names`` among ``per_site`` per slot."""
        if consecutive:  # a view
            return slice(slots[0] * per_site, (slots[-1] + 1) * per_site)
        index = [slot * per_site + i for slot in slots for i in range(per_site)]
        return torch.tensor(index, device=group.root_phi.device)

    contexts = []
    for v in views:
        ctx = v.context(**{p: data[p] for p in v.parents})
        contexts.append((ctx - v.context_loc) / v.context_scale)  # (n, C)
    context = torch.stack(contexts)  # (G, n, C)
    n = context.shape[1]
    # (G * L, n, C): each site's context once per flow layer, as in _site_mlp
    h = context.unsqueeze(1).expand(-1, L, -1, -1)
    phi = group.hyper_networks(h.reshape(G * L, n, width), networks(L))
    phi = phi.view(G, L, n, group.total)
    loc = torch.stack([v.value_loc for v in views]).unsqueeze(-1)
    scale = torch.stack([v.value_scale for v in views]).unsqueeze(-1)
    x = torch.stack([data[s] for s in names])  # (G, n)
    z = (x - loc) / scale  # (G, n), as ToNoiseTransform
    if group.affine:  # as site_transform's first step, site_affine's slicing
        a = group.hyper_networks(context, networks(1), affine=True)
        z = group.affine_step(a)(z)  # (G, n)
    if group.flow == "nsf":  # as RQSFlowTransform.call_and_ladj, all sites at once
        return dict(zip(names, rqs_flow(z, rqs_table(phi, group.bins))[0].unbind(0)))
    z = z.unsqueeze(-1)  # (G, n, 1), as ToNoiseTransform._lift
    for i in range(L):  # as site_transform: layer i's parameters, (G, n, 1, P)
        z = group._layer(phi[:, i].unsqueeze(-2))(z)
    return dict(zip(names, z.squeeze(-1).unbind(0)))
