"""Stacked flow mechanisms: many scalar sites' flows evaluated in one batched call.

A causal model with one small flow per variable spends most of a training step in
Python and kernel-launch overhead: ``S`` sites times ``L`` flow layers times a few
linear layers each. :class:`StackedFlows` holds the hyper-networks of ``S`` scalar-site
NSF (or MAF) mechanisms as stacked tensors, shape ``(S * L, in, out)``, and scores all
sites of a data batch with one :func:`torch.baddbmm` per hyper-network layer and, for
NSF, one fused rational-quadratic spline pass over all sites and flow layers
(:mod:`pyro_causalgen.mechanisms.spline`: zuko's spline, one knot table, one bin search
and one gather per layer, a hand-written backward), whatever ``S`` is; MAF layers
go through zuko's affine transform.

The mechanisms stay per site: :attr:`StackedFlows.views` holds one
:class:`StackedFlowMechanism` per site, an ordinary
:class:`~pyro_causalgen.mechanisms.base.Mechanism` that returns a
:class:`~pyro_causalgen.mechanisms.distribution.MechanismDistribution` (exact inverse,
``noise`` / ``from_noise``, its own standardisation) and stands at its own
``pyro.sample`` site, so interventions and counterfactual handlers see nothing new.
Each site's flow is the same function as a zuko ``NSF`` / ``MAF`` with ``features=1``
(weights convert both ways with :meth:`StackedFlows.from_mechanisms` and
:meth:`StackedFlows.unstack`); site ``j`` reads only its own parents' columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions.transforms import Transform
from zuko.transforms import (
    ComposedTransform,
    DependentTransform,
    MonotonicAffineTransform,
    MonotonicRQSTransform,
)
from zuko.utils import unpack

from pyro_causalgen.errors import DataError, ShapeError
from pyro_causalgen.mechanisms.base import Mechanism, Shape, _as_shape, _numel
from pyro_causalgen.mechanisms.flows import FlowMechanism
from pyro_causalgen.mechanisms.spline import RQSFlowTransform, rqs_flow, rqs_table

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class StackedFlowMechanism(Mechanism):
    """One site of a :class:`StackedFlows` group: a scalar flow mechanism.

    Built by its group, never directly. It owns its standardisation buffers; its flow
    weights are slices of the group's stacked tensors (so ``parameters()`` of a view is
    empty: optimise, move and save the group, or the model holding it). Called with
    its parents it returns a ``MechanismDistribution`` with batch shape ``(*batch,)``
    and event shape ``()``.

    Example::

        >>> group = StackedFlows({"x": [], "y": ["x"]}, hidden_features=(8,))
        >>> d = group.views["y"](x=torch.randn(4))
        >>> u = torch.randn(4)
        >>> torch.allclose(d.noise(d.from_noise(u)), u, atol=1e-5)
        True
    """

    def __init__(
        self,
        group: StackedFlows,
        parents: Mapping[str, Shape],
        name: str,
    ) -> None:
        super().__init__((), parents, name)
        # a plain attribute, not a submodule: the group owns this view, not vice versa
        object.__setattr__(self, "_group", group)

    @property
    def group(self) -> StackedFlows:
        """The :class:`StackedFlows` holding this site's weights."""
        return self._group  # type: ignore[no-any-return]

    @property
    def config(self) -> dict[str, Any]:
        """The config of the equivalent :class:`FlowMechanism` (see :meth:`unstack`)."""
        return {**super().config, **self.group.flow_config}

    def flow_transform(self, context: Tensor | None) -> Transform:
        return self.group.site_transform(self.name, context)  # type: ignore[arg-type]

    def unstack(self) -> FlowMechanism:
        """A standalone :class:`FlowMechanism` computing the same function."""
        return self.group.unstack([self.name])[self.name]  # type: ignore[index]


class StackedFlows(nn.Module):
    """Hyper-networks of ``S`` scalar-site flow mechanisms, stacked for batched calls.

    Site ``j`` with ``C_j`` context features (its parents, flattened in order) has
    ``L = transforms`` flow layers; each layer's parameters come from its own MLP of the
    standardised context, exactly as in a zuko ``NSF(features=1, context=C_j)``. The
    MLP weights of all non-root sites are stored as ``weights[k]`` of shape
    ``(S_ctx * L, in_k, out_k)`` (the first layer's input padded to the widest context,
    with zero weights and a zero input in the padding); root sites' layer parameters
    are ``root_phi``, ``(S_root, L, P)``.

    :param parents: ordered mapping ``site -> parents``; parents are a mapping
        ``name -> event shape`` or a sequence of scalar parent names. Every site is a
        scalar; parents may be vectors (flattened into the context).
    :param flow: ``"nsf"`` (rational-quadratic splines) or ``"maf"`` (affine).
    :param transforms: flow layers per site.
    :param hidden_features: hidden widths of each hyper-network.
    :param bins: spline bins (NSF only).
    :param affine: start every site's flow (data to noise) with a conditional affine
        step, ``z = exp(a(pa)) x + b(pa)``, from a hyper-network of its own
        (``affine_weights``, ``affine_biases``; ``root_affine`` at roots): the flow
        layers then shape the residual of a location-scale model, which an
        additive-noise mechanism ``x = g(pa) + s u`` needs however far ``g(pa)``
        reaches (a spline alone is the identity beyond its bound).

    Example::

        >>> group = StackedFlows({"a": [], "b": ["a"], "c": ["a", "b"]}, transforms=2)
        >>> data = {k: torch.randn(5) for k in "abc"}
        >>> group.log_prob_sites(data).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        parents: Mapping[str, Mapping[str, Any] | Sequence[str]],
        flow: str = "nsf",
        transforms: int = 3,
        hidden_features: Sequence[int] = (64, 64),
        bins: int = 8,
        affine: bool = False,
    ) -> None:
        super().__init__()
        flow = flow.lower()
        if flow not in ("nsf", "maf"):
            raise ValueError(f"StackedFlows: unknown flow {flow!r}; use 'nsf' or 'maf'")
        if not parents:
            raise ShapeError("StackedFlows needs at least one site")
        self.flow = flow
        self.transforms = int(transforms)
        self.hidden_features = tuple(int(h) for h in hidden_features)
        self.bins = int(bins)
        self.affine = bool(affine)
        if flow == "nsf":
            self._univariate: Any = partial(MonotonicRQSTransform, slope=1e-3)
            self.shapes: list[tuple[int, ...]] = [(bins,), (bins,), (bins - 1,)]
        else:
            self._univariate = partial(MonotonicAffineTransform, slope=1e-3)
            self.shapes = [(), ()]
        self.total = sum(_numel(s) for s in self.shapes)

        site_parents: dict[str, dict[str, Shape]] = {}
        for site, pas in parents.items():
            if not isinstance(pas, Mapping):
                pas = {p: () for p in pas}
            site_parents[site] = {p: _as_shape(s) for p, s in pas.items()}
        self.sites: list[str] = list(site_parents)
        self.site_parents = site_parents
        self.views = nn.ModuleDict(
            {s: StackedFlowMechanism(self, pas, s) for s, pas in site_parents.items()}
        )
        # internal order: sites with a context first, then roots
        self._ctx_sites = [s for s in self.sites if site_parents[s]]
        self._root_sites = [s for s in self.sites if not site_parents[s]]
        self._internal = self._ctx_sites + self._root_sites
        self._slot = {s: i for i, s in enumerate(self._internal)}

        # context columns: every parent once, flattened, in order of first use
        inputs: dict[str, Shape] = {}
        for pas in site_parents.values():
            for p, shape in pas.items():
                if inputs.setdefault(p, shape) != shape:
                    raise ShapeError(
                        f"StackedFlows: parent '{p}' has event shape {inputs[p]} for "
                        f"one site and {shape} for another"
                    )
        self.inputs = inputs
        offsets, col = {}, 0
        for p, shape in inputs.items():
            offsets[p], col = col, col + _numel(shape)
        self._pad_column = col  # index of the all-zero padding column
        widths = [self.views[s].context_features for s in self._ctx_sites]
        self._context_widths = widths
        self.max_context = max(widths, default=0)
        index = torch.full((len(widths), self.max_context), col, dtype=torch.long)
        for i, s in enumerate(self._ctx_sites):
            cols = [
                offsets[p] + k
                for p, shape in site_parents[s].items()
                for k in range(_numel(shape))
            ]
            index[i, : len(cols)] = torch.tensor(cols)
        self.register_buffer("context_index", index, persistent=False)
        # where each site's context standardisation sits in the concatenated buffers
        loc_index = torch.full((len(widths), self.max_context), sum(widths))
        start = 0
        for i, w in enumerate(widths):
            loc_index[i, :w] = torch.arange(start, start + w)
            start += w
        self.register_buffer("_loc_index", loc_index, persistent=False)
        # the batched pass stacks one data row per site (internal order), then the
        # parents that are not scalar sites of this group (flattened), then zeros:
        # ``_row_index[g, c]`` is the row of context column ``c`` of hyper-network
        # ``g = slot * L + layer`` (the padding points at the zero row)
        extra = [p for p in inputs if not (p in self._slot and inputs[p] == ())]
        self._extra_inputs = extra
        row_of: dict[str, int] = {s: self._slot[s] for s in self._internal}
        n_rows = len(self._internal)
        for p in extra:
            row_of[p], n_rows = n_rows, n_rows + _numel(inputs[p])
        rows_index = torch.full((len(widths), self.max_context), n_rows)
        for i, s in enumerate(self._ctx_sites):
            r = [
                row_of[p] + k
                for p, shape in site_parents[s].items()
                for k in range(_numel(shape))
            ]
            rows_index[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        self.register_buffer(
            "_row_index",
            rows_index.repeat_interleave(self.transforms, 0),
            persistent=False,
        )
        # (inference mode, [(buffer, version)]), stacked buffers: see _standardisation
        self._cache: tuple[tuple[bool, list[tuple[Tensor, int]]], tuple] | None = None

        L, G = self.transforms, len(self._ctx_sites) * self.transforms
        dims = [self.max_context, *self.hidden_features, self.total]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(G, i, o)) for i, o in zip(dims[:-1], dims[1:])
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(G, 1, o)) for o in dims[1:]
        )
        self.root_phi = nn.Parameter(torch.randn(len(self._root_sites), L, self.total))
        if self.affine:  # one hyper-network per context site, (shift, scale) out
            dims[-1] = 2
            n_ctx = len(self._ctx_sites)
            self.affine_weights = nn.ParameterList(
                nn.Parameter(torch.zeros(n_ctx, i, o))
                for i, o in zip(dims[:-1], dims[1:])
            )
            self.affine_biases = nn.ParameterList(
                nn.Parameter(torch.zeros(n_ctx, 1, o)) for o in dims[1:]
            )
            self.root_affine = nn.Parameter(torch.randn(len(self._root_sites), 2))
        self.reset_parameters()

    # ------------------------------------------------------------------ set-up
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """``nn.Linear``'s default initialisation, per site (fan-in without padding)."""
        stacks = [(self.weights, self.biases, self.transforms)]
        if self.affine:
            stacks.append((self.affine_weights, self.affine_biases, 1))
            self.root_affine.normal_()
        for weights, biases, L in stacks:
            for k, (w, b) in enumerate(zip(weights, biases)):
                for i, width in enumerate(self._context_widths):
                    fan_in = width if k == 0 else w.shape[1]
                    bound = 1 / math.sqrt(fan_in)
                    rows = slice(i * L, (i + 1) * L)
                    w[rows].zero_()
                    w[rows, :fan_in].uniform_(-bound, bound)
                    b[rows].uniform_(-bound, bound)
        self.root_phi.normal_()

    @property
    def flow_config(self) -> dict[str, Any]:
        """Flow options shared by every site (as :class:`FlowMechanism` takes them)."""
        return {
            "flow": self.flow,
            "transforms": self.transforms,
            "hidden_features": self.hidden_features,
            "bins": self.bins,
            "affine": self.affine,
        }

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this group (for save / load)."""
        parents = {s: dict(p) for s, p in self.site_parents.items()}
        return {"parents": parents, **self.flow_config}

    def extra_repr(self) -> str:
        return (
            f"sites={self.sites}, flow={self.flow!r}, transforms={self.transforms}, "
            f"affine={self.affine}"
        )

    # --------------------------------------------------------------- per site
    def _site_context(self, slot: int, context: Tensor | None) -> Tensor:
        """A context site's standardised context as ``(1, rows, C)``, checked."""
        width = self._context_widths[slot]
        if context is None:
            raise ShapeError(
                f"StackedFlows: site '{self._internal[slot]}' needs a context"
            )
        if context.shape[-1] != width:
            raise ShapeError(
                f"StackedFlows: site '{self._internal[slot]}' takes {width} context "
                f"features, got shape {tuple(context.shape)}"
            )
        return context.reshape(1, -1, width)

    def _site_mlp_layers(self, slot: int, context: Tensor | None) -> Tensor:
        """Hyper-network outputs, layer-major and contiguous: ``(L, rows, P)``."""
        L = self.transforms
        h = self._site_context(slot, context).expand(L, -1, -1)  # (L, rows, C)
        return self.hyper_networks(h, slice(slot * L, (slot + 1) * L))

    def hyper_networks(
        self, h: Tensor, rows: slice | Tensor = slice(None), affine: bool = False
    ) -> Tensor:
        """Apply the stacked MLPs ``rows`` (``g = slot * L + layer``) to contexts ``h``.

        :param h: ``(G, rows, C)`` standardised contexts of the ``G`` selected
            hyper-networks; ``C`` may be narrower than the widest context (the padding
            columns are then skipped).
        :param affine: use the affine step's hyper-networks (``g = slot``) instead.
        :returns: ``(G, rows, P)`` flow-layer parameters (``P = 2`` for ``affine``).
        """
        width = h.shape[-1]
        weights = self.affine_weights if affine else self.weights
        biases = self.affine_biases if affine else self.biases
        last = len(weights) - 1
        for k, (w, b) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(b[rows], h, w[rows, :width] if k == 0 else w[rows])
            if k < last:
                h = h.relu_()  # in place: baddbmm's backward does not need its output
        return h

    def site_phi(self, site: str, context: Tensor | None) -> Tensor:
        """Flow-layer parameters of ``site``: ``(*batch, L, P)`` (``(L, P)`` at roots).

        :param context: the site's standardised context, ``(*batch, C)``.
        """
        slot = self._slot[site]
        phi = self._site_phi_layers(slot, context)
        return phi if slot >= len(self._ctx_sites) else phi.movedim(0, -2)

    def _site_phi_layers(self, slot: int, context: Tensor | None) -> Tensor:
        """Layer-major flow parameters: ``(L, *batch, P)``, at roots ``(L, P)``."""
        n_ctx = len(self._ctx_sites)
        if slot >= n_ctx:
            return self.root_phi[slot - n_ctx]
        h = self._site_mlp_layers(slot, context)  # (L, rows, P)
        assert context is not None  # checked by _site_context
        return h.reshape(self.transforms, *context.shape[:-1], self.total)

    def _layer(self, phi: Tensor) -> Transform:
        return self._univariate(*unpack(phi, self.shapes))

    def site_affine(self, site: str, context: Tensor | None) -> Tensor:
        """Parameters ``(shift, unconstrained scale)`` of ``site``'s affine step.

        :param context: the site's standardised context, ``(*batch, C)``.
        :returns: ``(*batch, 2)`` (``(2,)`` at roots).
        """
        slot, n_ctx = self._slot[site], len(self._ctx_sites)
        if slot >= n_ctx:
            return self.root_affine[slot - n_ctx]
        h = self._site_context(slot, context)
        out = self.hyper_networks(h, slice(slot, slot + 1), affine=True)
        assert context is not None  # checked by _site_context
        return out.reshape(*context.shape[:-1], 2)

    @staticmethod
    def affine_step(params: Tensor) -> MonotonicAffineTransform:
        """zuko's affine transform ``exp(a) x + b`` from ``(*, 2)`` parameters."""
        return MonotonicAffineTransform(params[..., 0], params[..., 1], slope=1e-3)

    def site_transform(self, site: str, context: Tensor | None) -> Transform:
        """Map standardised data ``(*batch, 1)`` to noise for one site (event dim 1).

        NSF sites get the fused
        :class:`~pyro_causalgen.mechanisms.spline.RQSFlowTransform` (the function of
        the composed zuko layers, in far fewer kernels); MAF sites compose zuko's
        affine layers.
        """
        slot = self._slot[site]
        steps: list[Transform] = []
        if self.affine:
            a = self.site_affine(site, context).unsqueeze(-2)  # (*batch, 1, 2)
            steps.append(DependentTransform(self.affine_step(a), 1))
        phi = self._site_phi_layers(slot, context)  # layer-major: each layer contiguous
        if self.flow == "nsf":
            steps.append(RQSFlowTransform(rqs_table(phi, self.bins)))
        else:
            steps += [DependentTransform(self._layer(p.unsqueeze(-2)), 1) for p in phi]
        return steps[0] if len(steps) == 1 else ComposedTransform(*steps)

    # ---------------------------------------------------------------- batched
    def _column(self, data: Mapping[str, Tensor], name: str, ref: Tensor) -> Tensor:
        try:
            value = data[name]
        except KeyError:
            raise DataError(
                f"StackedFlows: no data for '{name}'; got columns {sorted(data)}"
            ) from None
        if not isinstance(value, Tensor):
            value = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
        if value.device != ref.device:
            raise DataError(
                f"StackedFlows: column '{name}' is on {value.device} but the model is "
                f"on {ref.device}"
            )
        return value.to(ref.dtype)

    def log_prob_sites(self, data: Mapping[str, Tensor]) -> Tensor:
        """Every site's ``log p(x_s | pa_s)`` in one batched pass, ``(*batch, S)``.

        :param data: raw (unstandardised) values: ``(*batch,)`` for each site and
            ``(*batch, *event)`` for each parent; batch shapes broadcast.
        :returns: log densities in the order of :attr:`sites`.
        """
        lp, batch = self._log_prob_internal(data)
        order = [self._slot[s] for s in self.sites]
        if order != list(range(len(order))):
            lp = lp[order]
        return lp.T.reshape(*batch, -1)

    def log_prob_sum(self, data: Mapping[str, Tensor]) -> Tensor:
        """``sum_s log p(x_s | pa_s)`` per row, ``(*batch,)``."""
        lp, batch = self._log_prob_internal(data)
        return lp.sum(0).reshape(batch)

    def _standardisation(self) -> tuple[Tensor, ...]:
        """Stacked standardisation of the batched pass, cached until a buffer changes.

        :returns: value ``loc`` and ``scale``, ``(S, 1)``;
            ``log scale + log(2 pi) / 2``, ``(S, 1)``; context ``loc`` and
            ``scale``, ``(S_ctx * L, Cmax, 1)`` (padding at 0 and 1); internal order.

        The cache is keyed on the identity and version counter of every site's four
        buffers (``copy_``, ``fit``'s standardisation, ``load_state_dict`` and ``.to``
        all invalidate it) and on inference mode.
        """
        views = [self.views[s]._buffers for s in self._internal]
        names = ("value_loc", "value_scale", "context_loc", "context_scale")
        bufs: list[Tensor] = [b[n] for b in views for n in names]  # type: ignore[misc]
        inference = torch.is_inference_mode_enabled()
        try:
            key = [(t, t._version) for t in bufs]
        except RuntimeError:  # inference tensors have no version counter
            key = None
        cache = self._cache
        if (
            key is not None
            and cache is not None
            and cache[0][0] is inference
            and all(a is b and u == v for (a, u), (b, v) in zip(cache[0][1], key))
        ):
            return cache[1]
        loc = torch.stack(bufs[0::4])[:, None]
        scale = torch.stack(bufs[1::4])[:, None]
        const = scale.log() + _HALF_LOG_2PI
        out: tuple[Tensor, ...] = (loc, scale, const)
        n_ctx = len(self._ctx_sites)
        if n_ctx:
            ref = self.root_phi
            cloc = torch.cat(bufs[2 : 4 * n_ctx : 4] + [ref.new_zeros(1)])
            cscale = torch.cat(bufs[3 : 4 * n_ctx : 4] + [ref.new_ones(1)])
            where = self._loc_index.repeat_interleave(self.transforms, 0)
            out += (cloc[where][..., None], cscale[where][..., None])
        self._cache = ((inference, key), out) if key is not None else None
        return out

    def _log_prob_internal(
        self, data: Mapping[str, Tensor]
    ) -> tuple[Tensor, torch.Size]:
        """Log densities ``(S, rows)`` in internal site order, and the batch shape."""
        ref = self.root_phi
        values = [self._column(data, s, ref) for s in self._internal]
        extra = [self._column(data, p, ref) for p in self._extra_inputs]
        batch_shapes = [v.shape for v in values]
        for p, c in zip(self._extra_inputs, extra):
            shape = self.inputs[p]
            k = len(shape)
            if tuple(c.shape[c.dim() - k :]) != shape or c.dim() < k:
                raise ShapeError(
                    f"StackedFlows: parent '{p}' has shape {tuple(c.shape)}, "
                    f"expected (*batch, {', '.join(map(str, shape))})"
                )
            batch_shapes.append(c.shape[: c.dim() - k])
        try:
            batch = torch.broadcast_shapes(*batch_shapes)
        except RuntimeError as err:
            raise ShapeError(
                f"StackedFlows: batch shapes of {self.sites} and "
                f"their parents do not broadcast"
            ) from err
        rows = _numel(tuple(batch))
        L, S, n_ctx = self.transforms, len(self._internal), len(self._ctx_sites)
        std = self._standardisation()
        loc, scale, const = std[:3]

        # one data row per site (and per extra parent column), then the zero row
        data_rows = [v if v.shape == batch else v.expand(batch) for v in values]
        if n_ctx:
            data_rows.append(ref.new_zeros(()).expand(batch))
        x = torch.stack(data_rows).reshape(len(data_rows), rows)
        if extra:
            cols = [
                c.expand(*batch, *self.inputs[p]).reshape(rows, -1).T
                for p, c in zip(self._extra_inputs, extra)
            ]
            x = torch.cat([x[:S], *cols, x[S:]])
        z = (x[:S] - loc) / scale  # (S, rows)
        # (S_ctx * L, rows, Cmax): each hyper-network's standardised context
        ctx = (
            ((x[self._row_index] - std[3]) / std[4]).transpose(1, 2) if n_ctx else None
        )
        ladj: Tensor | None = None
        if self.affine:
            params = []
            if ctx is not None:  # each site's context once (its first flow layer's)
                params.append(self.hyper_networks(ctx[::L], affine=True))
            if self._root_sites:
                params.append(self.root_affine[:, None, :].expand(-1, rows, -1))
            step = self.affine_step(torch.cat(params) if len(params) > 1 else params[0])
            z, ladj = step(z), step.log_scale

        phis = []
        if ctx is not None:
            h = self.hyper_networks(ctx)  # (G, rows, P)
            phis.append(h.view(n_ctx, L, rows, self.total))
        if self._root_sites:
            phis.append(self.root_phi[:, :, None, :].expand(-1, -1, rows, -1))
        phi = torch.cat(phis, 0) if len(phis) > 1 else phis[0]  # (S, L, rows, P)

        if self.flow == "nsf":
            table = rqs_table(phi, self.bins, slope=1e-3)  # (S, L, rows, 3, K + 1)
            # contiguous knot positions for the bin search, (L, S, rows, K + 1)
            knots = table[:, :, :, 0].detach().transpose(0, 1).contiguous()
            z, spline_ladj = rqs_flow(z, table, knots)
            ladj = spline_ladj if ladj is None else ladj + spline_ladj
        else:
            for layer in range(L):
                z, a = self._layer(phi[:, layer]).call_and_ladj(z)
                ladj = a if ladj is None else ladj + a
        assert ladj is not None
        return ladj - 0.5 * z.square() - const, batch

    # ------------------------------------------------------------- conversion
    @classmethod
    def from_mechanisms(cls, mechanisms: Mapping[str, FlowMechanism]) -> StackedFlows:
        """Stack scalar :class:`FlowMechanism` s that share their flow options.

        Weights and standardisation are copied: each view computes the same function
        as the mechanism it came from.

        :raises ShapeError: naming a site that is not a scalar flow or whose options
            differ from the first site's.
        """
        items = list(mechanisms.items())
        if not items:
            raise ShapeError("from_mechanisms needs at least one mechanism")
        first = items[0][1]
        opts = {
            k: first.config[k]
            for k in ("flow", "transforms", "hidden_features", "bins", "affine")
        }
        for name, mech in items:
            if not isinstance(mech, FlowMechanism) or mech.event_shape != ():
                raise ShapeError(f"site '{name}' is not a scalar FlowMechanism")
            other = {k: mech.config[k] for k in opts}
            if other != opts:
                raise ShapeError(
                    f"site '{name}' has flow options {other}, the group has {opts}"
                )
        group = cls({n: m.parents for n, m in items}, **opts)
        group.to(first.value_loc)
        with torch.no_grad():
            for name, mech in items:
                group._copy_site(name, mech, to_group=True)
        return group

    def unstack(self, sites: Sequence[str] | None = None) -> dict[str, FlowMechanism]:
        """Standalone :class:`FlowMechanism` s computing the same functions."""
        out: dict[str, FlowMechanism] = {}
        for name in self.sites if sites is None else sites:
            view = self.views[name]
            mech = FlowMechanism(
                parents=view.parents, name=name, **self.flow_config
            ).to(self.root_phi)
            with torch.no_grad():
                self._copy_site(name, mech, to_group=False)
            out[name] = mech
        return out

    @torch.no_grad()
    def load_site(self, name: str, mechanism: FlowMechanism) -> None:
        """Copy a scalar :class:`FlowMechanism`'s weights and standardisation into
        site ``name`` (its parents may be named differently; their order and shapes
        must match). Members of a batched ensemble come out of their stack this way.

        Example::

            >>> a = StackedFlows({"y": ["x"]}, hidden_features=(4,))
            >>> b = StackedFlows({"y@1": ["x@1"]}, hidden_features=(4,))
            >>> a.load_site("y", b.unstack(["y@1"])["y@1"])
            >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
            True
        """
        view = self.views[name]
        shapes = list(getattr(mechanism, "parents", {}).values())
        if shapes != list(view.parents.values()):
            raise ShapeError(
                f"site '{name}': parents of shapes {list(view.parents.values())}, "
                f"the mechanism has {shapes}"
            )
        self._copy_site(name, mechanism, to_group=True)

    def _copy_site(self, name: str, mech: FlowMechanism, to_group: bool) -> None:
        view, slot, L = self.views[name], self._slot[name], self.transforms
        for buf in ("value_loc", "value_scale", "context_loc", "context_scale"):
            src, dst = getattr(mech, buf), getattr(view, buf)
            (dst if to_group else src).copy_(src if to_group else dst)
        layers = list(mech.net.transform.transforms)  # zuko ElementWiseTransforms
        n_ctx, root = len(self._ctx_sites), slot >= len(self._ctx_sites)
        # (zuko layer, root parameters, stacked weights, stacked biases, hyper-network)
        pairs = []
        if self.affine:
            root_row = self.root_affine[slot - n_ctx] if root else None
            pairs.append(
                (layers.pop(0), root_row, self.affine_weights, self.affine_biases, slot)
            )
        for li, layer in enumerate(layers):
            root_row = self.root_phi[slot - n_ctx, li] if root else None
            pairs.append((layer, root_row, self.weights, self.biases, slot * L + li))
        width = self._context_widths[slot] if not root else 0
        for layer, root_row, weights, biases, g in pairs:
            if root_row is not None:
                flat = torch.cat([p.reshape(-1) for p in layer.phi])
                if to_group:
                    root_row.copy_(flat)
                else:
                    sizes = [p.numel() for p in layer.phi]
                    for p, chunk in zip(layer.phi, root_row.split(sizes)):
                        p.copy_(chunk.view_as(p))
                continue
            linears = [m for m in layer.hyper if hasattr(m, "weight")]
            for k, lin in enumerate(linears):
                w = weights[k][g]
                w = w[:width] if k == 0 else w
                b = biases[k][g, 0]
                if to_group:
                    w.copy_(lin.weight.T)
                    b.copy_(lin.bias)
                else:
                    lin.weight.copy_(w.T)
                    lin.bias.copy_(b)
