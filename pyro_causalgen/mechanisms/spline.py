"""A fused monotonic rational-quadratic spline, in plain torch, for stacked flows.

Computes exactly the function of zuko's :class:`~zuko.transforms.MonotonicRQSTransform`
(Durkan et al., 2019, with zuko's soft clamping of the unconstrained parameters, its
``bound`` and its identity outside ``[-bound, bound]``) with far fewer kernel launches,
so that the many tiny splines of a stacked group
(:class:`~pyro_causalgen.mechanisms.stacked.StackedFlows`) cost little more than one:

* :func:`rqs_table` turns the unconstrained parameters of every site and every flow
  layer into one knot table at once (one ``exp`` for widths, heights and derivatives,
  a softmax written as ``exp / sum``, which is exact here because the soft clamp bounds
  its inputs to ``|.| < -log(slope) / 2``);
* :func:`rqs_flow` evaluates ``L`` layers in sequence (:func:`rqs_forward` one):
  per layer one ``searchsorted`` for the bin and one ``gather`` for both knots of the
  bin (positions, values and derivatives together), no per-layer
  :class:`~torch.distributions.Transform` objects and no zero ``ladj`` tensors;
* both have hand-written backward passes (one autograd node each instead of some
  forty per layer; first-order only), checked against zuko and ``gradcheck`` in
  ``tests/test_stacked.py``; :func:`rqs_inverse` is zuko's ``_inverse``;
* :class:`RQSFlowTransform` wraps the layers of one site as a ``Transform``, which
  is what a stacked view's distribution samples, scores and abducts with.

Shapes: ``K`` bins; ``*`` any batch shape. A table is ``(*, 3, K + 1)``: knot positions
``x_0 = -B < ... < x_K ~ B``, knot values ``y_0 .. y_K`` and knot derivatives
``d_0 = 1, d_1 .. d_{K-1}, d_K = 1`` (zuko's layout).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.distributions import constraints
from torch.distributions.transforms import Transform

_Backward = Callable[..., Any]


def _first_order(backward: _Backward) -> _Backward:
    """``once_differentiable``, and an error instead of a silent zero when someone
    differentiates twice (``create_graph=True``: Hessians, ``autograd.functional``)."""
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapped(ctx: Any, *grads: Tensor) -> Any:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the fused spline of stacked flows is differentiable once; for second "
                "derivatives use finite differences of its gradient (as "
                "fit_bayesian(guide='laplace') does) or unstacked mechanisms "
                "(StructuralCausalModel(..., stack=False))"
            )
        return inner(ctx, *grads)

    return wrapped


def rqs_table(
    phi: Tensor, bins: int, bound: float = 5.0, slope: float = 1e-3
) -> Tensor:
    """Knot table of the splines with unconstrained parameters ``phi``.

    :param phi: ``(*, 3K - 1)``: widths ``(K)``, heights ``(K)`` and derivatives
        ``(K - 1)``, concatenated (the layout of zuko's ``NSF`` hyper-networks).
    :param bins: ``K``.
    :param bound: the spline's (co)domain bound ``B``.
    :param slope: the minimum slope; soft-clamps the parameters as zuko does.
    :returns: ``(*, 3, K + 1)`` knot positions, values and derivatives.
    """
    K = bins
    if phi.shape[-1] != 3 * K - 1:
        raise ValueError(f"rqs_table: expected {3 * K - 1} parameters per spline")
    return _RQSTable.apply(phi, K, bound, slope)  # type: ignore[no-any-return]


class _RQSTable(torch.autograd.Function):
    """:func:`rqs_table` with a hand-written backward (one graph node)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, phi: Tensor, K: int, bound: float, slope: float
    ) -> Tensor:
        c = -math.log(slope)
        # zuko: w / (1 + |2 w / log(slope)|) for widths and heights, d / (1 + |d / ..|)
        coef = phi.new_full((3 * K - 1,), 1.0 / c)
        coef[: 2 * K] = 2.0 / c
        den = 1 + phi.abs() * coef
        e = torch.exp(phi / den)  # |exponent| < c: no overflow, softmax = e / sum e
        wh = e[..., : 2 * K].unflatten(-1, (2, K))  # (*, 2, K)
        cum = torch.cumsum(F.pad(wh, (1, 0)), -1)  # (*, 2, K + 1), starts at 0
        ratio = (2 * bound) / cum[..., -1:]
        # bound * (2 * cumsum(softmax) - 1)
        knots = torch.addcmul(cum.new_full((), -bound), cum, ratio)
        derivatives = F.pad(e[..., 2 * K :], (1, 1), value=1.0)  # exp(0) at both ends
        ctx.save_for_backward(den, e, cum, ratio)
        return torch.cat([knots, derivatives.unsqueeze(-2)], -2)

    @staticmethod
    @_first_order
    def backward(  # type: ignore[override]
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor, None, None, None]:
        den, e, cum, ratio = ctx.saved_tensors
        g_knots = grad[..., :2, :]  # (*, 2, K + 1)
        g_cum = g_knots * ratio
        # knots = -B + cum * 2B / total, total = cum[..., -1]
        g_total = (g_cum * cum).sum(-1, keepdim=True) / cum[..., -1:]
        # cum[j] = sum_{i <= j} e_i: d / d e_i = sum_{j >= i} g_cum[j] - g_total
        cs = torch.cumsum(g_cum, -1)
        g_wh = (cs[..., -1:] - g_total) - cs[..., :-1]  # (*, 2, K)
        g_e = torch.cat([g_wh.flatten(-2), grad[..., 2, 1:-1]], -1)
        # d / d phi of exp(phi / (1 + c |phi|)) = e / (1 + c |phi|)^2
        return g_e * e / (den * den), None, None, None


def _bin(table: Tensor, seq: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where ``v`` falls among the knots ``seq`` ``(*, K + 1)`` of ``table``.

    :returns: mask ``(*)`` (inside the spline), the gather index ``(*, 3, 2)`` of the
        bin's two knots and the gathered knots ``(*, 3, 2)``.
    """
    K = table.shape[-1] - 1
    # zuko: sum(seq < v) - 1
    k = torch.searchsorted(seq, v.unsqueeze(-1).contiguous()) - 1
    idx = k.clamp(0, K - 1)  # any bin will do outside: the identity masks it
    mask = (idx == k).squeeze(-1)  # 0 <= k < K
    pair = (idx + torch.arange(2, device=idx.device)).unsqueeze(-2)  # (*, 1, 2)
    index = pair.expand(*pair.shape[:-2], 3, 2)
    return mask, index, table.gather(-1, index)


def _rqs_eval(
    x: Tensor, knots: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """zuko's ``call_and_ladj`` on gathered knots ``(*, 3, 2)``; no autograd graph.

    :returns: ``y``, ``ladj`` (both ``(*)``) and what :func:`_rqs_grad` needs.
    """
    (x0, x1), (y0, y1), (d0, d1) = (k.unbind(-1) for k in knots.unbind(-2))
    dx, dy = x1 - x0, y1 - y0
    s = dy / dx
    z = mask * (x - x0) / dx
    w = 1 - z
    zw, zz, ww = z * w, z * z, w * w
    dsum = d0 + d1 - 2 * s
    den = s + dsum * zw
    r = (s * zz + d0 * zw) / den  # (y - y0) / dy
    nj = 2 * s * zw + d0 * ww + d1 * zz
    jac = s * s * nj / (den * den)
    y = torch.where(mask, y0 + dy * r, x)
    ladj = mask * jac.log()
    return y, ladj, (mask, dx, dy, s, z, w, d0, d1, dsum, den, r, nj, jac)


def _rqs_grad(
    gy: Tensor, gl: Tensor, saved: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor]:
    """Backward of :func:`_rqs_eval`: gradients of ``x`` ``(*)``, knots ``(*, 3, 2)``.

    With ``z = (x - x0) / dx``, ``s = dy / dx``, ``w = 1 - z``,
    ``den = s + (d0 + d1 - 2 s) z w``: ``y = y0 + dy (s z^2 + d0 z w) / den`` and
    ``ladj = 2 log s + log(2 s z w + d0 w^2 + d1 z^2) - 2 log den``.
    """
    mask, dx, dy, s, z, w, d0, d1, dsum, den, r, nj, jac = saved
    gyi, gli = gy * mask, gl * mask  # zero outside the spline (identity there)
    inv_d, inv_n = 1 / den, 1 / nj
    zw, zz, ww, t = z * w, z * z, w * w, w - z
    zw_d = 2 * zw * inv_d
    ay = dy * inv_d  # d y / d (s, d0, d1) share dy / den
    gs = gli * (2 / s + 2 * zw * inv_n - 2 * (zz + ww) * inv_d)
    gs = gs + gyi * ay * (zz - r * (zz + ww))
    gd0 = gli * (ww * inv_n - zw_d) + gyi * ay * zw * (1 - r)
    gd1 = gli * (zz * inv_n - zw_d) - gyi * ay * zw * r
    nz = 2 * (s * t - d0 * w + d1 * z)  # d nj / d z
    gz = gli * (nz * inv_n - 2 * dsum * t * inv_d) + gyi * jac * dx
    # back to the knots: s = dy / dx, z = (x - x0) / dx
    gdy = gyi * r + gs / dx
    gdx = -(gs * s + gz * z) / dx
    gx_in = gz / dx
    gx = torch.where(mask, gx_in, gy)
    grads = [-gx_in - gdx, gdx, gyi - gdy, gdy, gd0, gd1]
    return gx, torch.stack(grads, -1).unflatten(-1, (3, 2))


def rqs_forward(
    x: Tensor, table: Tensor, sorted_x: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One spline layer: values and log-abs-det-Jacobians, zuko's ``call_and_ladj``.

    Differentiable in ``x`` and ``table`` (first order: the backward pass is written
    out by hand, one autograd node instead of about forty).

    :param x: ``(*)`` inputs.
    :param table: ``(*, 3, K + 1)`` from :func:`rqs_table`.
    :param sorted_x: optional contiguous copy of ``table[..., 0, :]`` (may be
        detached) for the bin search; made here if not given.
    :returns: ``y`` and ``log |dy/dx|``, both ``(*)``.
    """
    z, ladj = rqs_flow(
        x, table.unsqueeze(1), None if sorted_x is None else sorted_x[None]
    )
    return z, ladj


def rqs_flow(
    x: Tensor, table: Tensor, sorted_x: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``L`` spline layers in sequence: output and summed log-abs-det-Jacobians.

    :param x: ``(B, *)`` inputs.
    :param table: ``(B, L, *, 3, K + 1)``: layer ``l`` of row-batch ``B`` is
        ``table[:, l]`` (the layout of a stacked group's parameters).
    :param sorted_x: optional contiguous ``(L, B, *, K + 1)`` copy of the knot
        positions (may be detached); made here if not given.
    :returns: ``y`` and the summed ``log |dy/dx|``, both ``(B, *)``.
    """
    if sorted_x is None:
        sorted_x = table[..., 0, :].detach().transpose(0, 1).contiguous()
    return _RQSFlow.apply(x, table, sorted_x)  # type: ignore[no-any-return]


class _RQSFlow(torch.autograd.Function):
    """Composition of spline layers with a hand-written backward (one graph node)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, table: Tensor, sorted_x: Tensor
    ) -> tuple[Tensor, Tensor]:
        ladj: Tensor | None = None
        saved: list[Tensor] = []
        for layer in range(table.shape[1]):
            tab = table[:, layer]
            mask, index, knots = _bin(tab, sorted_x[layer], x)
            x, a, inner = _rqs_eval(x, knots, mask)
            ladj = a if ladj is None else ladj + a
            saved += [index, *inner]
        ctx.save_for_backward(*saved)
        ctx.table_shape = table.shape
        assert ladj is not None
        return x, ladj

    @staticmethod
    @_first_order
    def backward(  # type: ignore[override]
        ctx: Any, gy: Tensor, gl: Tensor
    ) -> tuple[Tensor, Tensor, None]:
        saved = ctx.saved_tensors
        n = len(saved) // ctx.table_shape[1]
        g_table = gy.new_zeros(ctx.table_shape)
        for layer in reversed(range(ctx.table_shape[1])):
            index, *inner = saved[layer * n : (layer + 1) * n]
            gy, g_knots = _rqs_grad(gy, gl, tuple(inner))
            g_table[:, layer].scatter_add_(-1, index, g_knots)
        return gy, g_table, None


def rqs_inverse(y: Tensor, table: Tensor) -> Tensor:
    """Inverse of :func:`rqs_forward` (zuko's ``_inverse``), ``(*)``.

    :param y: ``(*)`` outputs.
    :param table: ``(*, 3, K + 1)`` from :func:`rqs_table`.
    """
    seq = table[..., 1, :].detach().contiguous()
    mask, _, knots = _bin(table, seq, y.detach())
    (x0, x1), (y0, y1), (d0, d1) = (k.unbind(-1) for k in knots.unbind(-2))
    dx, dy = x1 - x0, y1 - y0
    s = dy / dx
    y_ = mask * (y - y0)
    a = dy * (s - d0) + y_ * (d0 + d1 - 2 * s)
    b = dy * d0 - y_ * (d0 + d1 - 2 * s)
    c = -s * y_
    z = 2 * c / (-b - (b**2 - 4 * a * c).sqrt())
    return torch.where(mask, x0 + z * dx, y)


class RQSFlowTransform(Transform):
    """``L`` spline layers of one scalar site as a transform of ``(*batch, 1)``.

    The fused counterpart of a composition of zuko
    :class:`~zuko.transforms.MonotonicRQSTransform` layers on a feature dim of size
    one (event dim 1): forward and ``call_and_ladj`` by :func:`rqs_flow`, inverse by
    :func:`rqs_inverse` layer by layer in reverse.

    :param table: ``(L, *batch, 3, K + 1)`` knot tables from :func:`rqs_table`;
        ``*batch`` broadcasts against the inputs' batch shape.

    Example::

        >>> table = rqs_table(torch.randn(2, 4, 3 * 8 - 1), bins=8)  # L=2, batch 4
        >>> t = RQSFlowTransform(table)
        >>> x = torch.randn(4, 1)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, table: Tensor) -> None:
        super().__init__(cache_size=0)
        self.table = table

    def _broadcast(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs ``(*batch)`` and tables ``(L, *batch, 3, K + 1)`` of one shape."""
        table = self.table
        batch = torch.broadcast_shapes(v.shape, table.shape[1:-2])
        if v.shape != batch:
            v = v.expand(batch)
        if table.shape[1:-2] != batch:
            missing = len(batch) - (table.dim() - 3)  # left-pad the batch dims
            table = table.reshape(table.shape[0], *[1] * missing, *table.shape[1:])
            table = table.expand(table.shape[0], *batch, *table.shape[-2:])
        return v, table

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs ``(*batch, 1)`` and log-abs-det-Jacobians ``(*batch)``."""
        v, table = self._broadcast(x.squeeze(-1))
        y, ladj = rqs_flow(v.unsqueeze(0), table.unsqueeze(0))
        return y.squeeze(0).unsqueeze(-1), ladj.squeeze(0)

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        v, table = self._broadcast(y.squeeze(-1))
        for layer in reversed(range(table.shape[0])):
            v = rqs_inverse(v, table[layer])
        return v.unsqueeze(-1)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]
