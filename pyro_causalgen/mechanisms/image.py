"""Image-valued mechanisms: conditional multi-scale Glow flows over ``C x H x W`` sites.

An :class:`ImageFlowMechanism` maps an image ``x`` (intensities in ``[0, 256)``, after
uniform dequantisation of 0-255 integers) to standard normal noise ``u`` of the same
shape, given its parents as context:

1. ``z = logit(alpha + (1 - 2 alpha) x / 256)`` elementwise (RealNVP preprocessing);
2. per level: squeeze (``C, H, W -> 4C, H/2, W/2``), ``steps`` Glow steps (ActNorm,
   invertible 1x1 convolution, affine coupling whose network sees the standardised
   parents), then half of the channels leave as noise and the rest go one level down;
3. the factored-out halves are put back in place (inverse squeezes), so ``u`` has the
   image's shape and the site's noise is one ``Normal(0, 1)`` tensor.

References: Dinh et al. (2017) RealNVP, Kingma & Dhariwal (2018) Glow, Pawlowski et al.
(2020) DeepSCM. Every map is exactly invertible; ``log_prob`` is one pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import constraints
from torch.distributions.transforms import Transform

from pyro_causalgen.errors import ShapeError
from pyro_causalgen.mechanisms.base import Mechanism, _safe_std
from pyro_causalgen.mechanisms.distribution import MechanismDistribution

Shape = tuple[int, ...]


# ------------------------------------------------------------------ helpers
def squeeze2d(x: Tensor) -> Tensor:
    """``(N, C, H, W) -> (N, 4C, H/2, W/2)``: each 2 x 2 patch becomes 4 channels."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, 4 * c, h // 2, w // 2)


def unsqueeze2d(x: Tensor) -> Tensor:
    """Inverse of :func:`squeeze2d`."""
    n, c, h, w = x.shape
    x = x.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, 2 * h, 2 * w)


def dequantize(x: Tensor, mode: str = "uniform") -> Tensor:
    """Map 0-255 integer intensities into the continuous space ``[0, 256)``.

    :param mode: ``"uniform"`` adds ``U[0, 1)`` noise (Theis et al., 2016), whose
        log-likelihood lower-bounds the discrete one; ``"center"`` adds 0.5 (the
        centre of each bin, a deterministic representative for abduction).

    Example::

        >>> dequantize(torch.tensor([0.0, 255.0]), "center").tolist()
        [0.5, 255.5]
    """
    if mode == "uniform":
        return x + torch.rand_like(x)
    if mode == "center":
        return x + 0.5
    raise ValueError(f"unknown dequantisation {mode!r}; use 'uniform' or 'center'")


def quantize(x: Tensor) -> Tensor:
    """Continuous intensities back to 0-255 integers (as floats): the bin of ``x``.

    Example::

        >>> quantize(torch.tensor([-3.0, 0.7, 255.9, 300.0])).tolist()
        [0.0, 0.0, 255.0, 255.0]
    """
    return x.floor().clamp(0.0, 255.0)


# ------------------------------------------------------------------ layers
class ActNorm(nn.Module):
    """Per-channel affine ``y = (x + b) * exp(s)``; data-initialised by :meth:`init`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))

    @torch.no_grad()
    def init(self, x: Tensor) -> None:
        """Set ``b, s`` so that ``x`` has zero mean and unit variance per channel."""
        mean = x.mean((0, 2, 3))
        std = x.std((0, 2, 3)) if x.shape[0] * x.shape[2] * x.shape[3] > 1 else None
        self.bias.copy_(-mean)
        if std is not None:
            self.log_scale.copy_(-(std + 1e-6).log())

    def forward(self, x: Tensor, ctx: Tensor | None) -> tuple[Tensor, Tensor]:
        y = (x + self.bias[:, None, None]) * self.log_scale.exp()[:, None, None]
        ladj = self.log_scale.sum() * x.shape[2] * x.shape[3]
        return y, ladj.expand(x.shape[0])

    def inverse(self, y: Tensor, ctx: Tensor | None) -> Tensor:
        return y * (-self.log_scale).exp()[:, None, None] - self.bias[:, None, None]


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution, LU-parameterised: ``W = P L (U + diag(s))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        q = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, low, up = torch.linalg.lu(q)
        s = torch.diagonal(up)
        self.register_buffer("perm", p)
        self.register_buffer("sign", torch.sign(s))
        self.register_buffer("lmask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(low * self.lmask)
        self.upper = nn.Parameter(torch.triu(up, 1))
        self.log_s = nn.Parameter(s.abs().log())

    def weight(self) -> Tensor:
        eye = torch.eye(
            self.lmask.shape[0], dtype=self.lower.dtype, device=self.lower.device
        )
        low = self.lower * self.lmask + eye
        up = self.upper * self.lmask.T + torch.diag(self.sign * self.log_s.exp())
        return self.perm @ low @ up

    def forward(self, x: Tensor, ctx: Tensor | None) -> tuple[Tensor, Tensor]:
        y = F.conv2d(x, self.weight()[:, :, None, None])
        ladj = self.log_s.sum() * x.shape[2] * x.shape[3]
        return y, ladj.expand(x.shape[0])

    def inverse(self, y: Tensor, ctx: Tensor | None) -> Tensor:
        inv = torch.linalg.inv(self.weight())
        return F.conv2d(y, inv[:, :, None, None])


class AffineCoupling(nn.Module):
    """Affine coupling: ``y_b = (x_b + shift) * sigmoid(raw + 2)``, ``(shift, raw) =
    net(x_a, context)``; the context enters as a learned per-channel bias."""

    def __init__(self, channels: int, context: int, hidden: int) -> None:
        super().__init__()
        self.ca = channels // 2
        cb = channels - self.ca
        self.conv_in = nn.Conv2d(self.ca, hidden, 3, padding=1)
        self.ctx = nn.Linear(context, hidden) if context else None
        self.conv_mid = nn.Conv2d(hidden, hidden, 1)
        self.conv_out = nn.Conv2d(hidden, 2 * cb, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _params(self, xa: Tensor, ctx: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self.conv_in(xa)
        if self.ctx is not None and ctx is not None:
            h = h + self.ctx(ctx)[:, :, None, None]
        h = self.conv_out(F.relu(self.conv_mid(F.relu(h))))
        shift, raw = h.chunk(2, dim=1)
        return shift, F.logsigmoid(raw + 2.0)

    def forward(self, x: Tensor, ctx: Tensor | None) -> tuple[Tensor, Tensor]:
        xa, xb = x[:, : self.ca], x[:, self.ca :]
        shift, log_scale = self._params(xa, ctx)
        yb = (xb + shift) * log_scale.exp()
        return torch.cat([xa, yb], 1), log_scale.sum((1, 2, 3))

    def inverse(self, y: Tensor, ctx: Tensor | None) -> Tensor:
        ya, yb = y[:, : self.ca], y[:, self.ca :]
        shift, log_scale = self._params(ya, ctx)
        return torch.cat([ya, yb * (-log_scale).exp() - shift], 1)


class GlowNet(nn.Module):
    """The parameters of a conditional multi-scale Glow on ``(N, C, H, W)`` tensors.

    :param shape: ``(C, H, W)``; ``H`` and ``W`` must be divisible by ``2**levels``.
    :param context: number of context features (0 for none).
    :param levels: number of scales (squeeze, steps, split).
    :param steps: Glow steps per level.
    :param hidden: channels of each coupling network.
    """

    def __init__(
        self, shape: Shape, context: int, levels: int, steps: int, hidden: int
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.levels = nn.ModuleList()
        for level in range(levels):
            c, h, w = 4 * c, h // 2, w // 2
            layers: list[nn.Module] = []
            for _ in range(steps):
                layers += [
                    ActNorm(c),
                    InvConv1x1(c),
                    AffineCoupling(c, context, hidden),
                ]
            self.levels.append(nn.ModuleList(layers))
            if level < levels - 1:
                c = c - c // 2  # the first c // 2 channels leave as noise

    def forward(
        self, x: Tensor, ctx: Tensor | None, init: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``(u, log|du/dx|)`` for ``x (N, C, H, W)``; ``init``: data-init ActNorm."""
        return self._down(x, ctx, 0, init)

    def _down(
        self, x: Tensor, ctx: Tensor | None, k: int, init: bool
    ) -> tuple[Tensor, Tensor]:
        x = squeeze2d(x)
        ladj = x.new_zeros(x.shape[0])
        for layer in self.levels[k]:  # type: ignore[union-attr]
            if init and isinstance(layer, ActNorm):
                layer.init(x)
            x, step = layer(x, ctx)
            ladj = ladj + step
        if k < len(self.levels) - 1:
            out, rest = x[:, : x.shape[1] // 2], x[:, x.shape[1] // 2 :]
            rest, deeper = self._down(rest, ctx, k + 1, init)
            x, ladj = torch.cat([out, rest], 1), ladj + deeper
        return unsqueeze2d(x), ladj

    def inverse(self, u: Tensor, ctx: Tensor | None) -> Tensor:
        """``x`` from ``u (N, C, H, W)``."""
        return self._up(u, ctx, 0)

    def _up(self, u: Tensor, ctx: Tensor | None, k: int) -> Tensor:
        x = squeeze2d(u)
        if k < len(self.levels) - 1:
            out, rest = x[:, : x.shape[1] // 2], x[:, x.shape[1] // 2 :]
            x = torch.cat([out, self._up(rest, ctx, k + 1)], 1)
        for layer in reversed(self.levels[k]):  # type: ignore[arg-type]
            x = layer.inverse(x, ctx)
        return unsqueeze2d(x)


# --------------------------------------------------------------- transform
class ImageToNoiseTransform(Transform):
    """Map images ``x (*batch, C, H, W)`` to noise ``u`` of the same shape.

    ``u = glow(logit(alpha + (1 - 2 alpha) x / 256); context)``. The batch dims of
    ``x`` and of the context broadcast (world dims on the context, say, against
    unbatched noise). Same interface as
    :class:`~pyro_causalgen.mechanisms.distribution.ToNoiseTransform`.

    :param net: the :class:`GlowNet`.
    :param context: standardised context ``(*batch, K)`` or ``None``.
    :param alpha: margin of the logit preprocessing.
    :param label: the mechanism's name, for error messages.

    Example::

        >>> net = GlowNet((1, 4, 4), context=0, levels=1, steps=1, hidden=4)
        >>> t = ImageToNoiseTransform(net, None, (1, 4, 4))
        >>> x = torch.rand(2, 1, 4, 4) * 255
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-3)
        True
    """

    bijective = True
    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)

    def __init__(
        self,
        net: GlowNet,
        context: Tensor | None,
        event_shape: Shape,
        alpha: float = 0.05,
        label: str = "image",
    ) -> None:
        super().__init__(cache_size=0)
        self.net, self.ctx, self.shape = net, context, tuple(event_shape)
        self.alpha, self.label = alpha, label

    def _flatten(self, x: Tensor) -> tuple[Tensor, Tensor | None, torch.Size]:
        if tuple(x.shape[x.dim() - 3 :]) != self.shape or x.dim() < 3:
            raise ShapeError(
                f"{self.label}: value of shape {tuple(x.shape)}, expected "
                f"(*batch, {', '.join(map(str, self.shape))})"
            )
        xb = x.shape[:-3]
        batch = (
            xb if self.ctx is None else torch.broadcast_shapes(xb, self.ctx.shape[:-1])
        )
        flat = x.expand(*batch, *self.shape).reshape(-1, *self.shape)
        ctx = None
        if self.ctx is not None:
            ctx = self.ctx.expand(*batch, self.ctx.shape[-1]).reshape(
                -1, self.ctx.shape[-1]
            )
        return flat, ctx, batch

    def _logit(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a = self.alpha
        y = a + (1 - 2 * a) * x / 256.0
        z = y.log() - (-y).log1p()
        ladj = (math.log((1 - 2 * a) / 256.0) - y.log() - (-y).log1p()).sum((1, 2, 3))
        return z, ladj

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``u`` and ``log|du/dx|`` (summed over the image) in one pass."""
        flat, ctx, batch = self._flatten(x)
        z, ladj = self._logit(flat)
        u, ladj_flow = self.net(z, ctx)
        return u.reshape(*batch, *self.shape), (ladj + ladj_flow).reshape(batch)

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def _inverse(self, u: Tensor) -> Tensor:
        flat, ctx, batch = self._flatten(u)
        z = self.net.inverse(flat, ctx)
        x = 256.0 * (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)
        return x.reshape(*batch, *self.shape)

    def log_abs_det_jacobian(self, x: Tensor, u: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]


class ImageMechanismDistribution(MechanismDistribution):
    """A :class:`MechanismDistribution` over images with uniform dequantisation.

    While its mechanism is in training mode (and was built with ``dequantize=True``),
    :meth:`log_prob` scores ``x + U[0, 1)`` instead of ``x``: a one-sample estimate of
    the dequantised likelihood, so that fitting on 0-255 integer images maximises a
    lower bound of their discrete log-likelihood. In eval mode it is the exact density
    at its argument.

    Example::

        >>> mech = ImageFlowMechanism((1, 4, 4), hidden=4, steps=1).eval()
        >>> d = mech()
        >>> isinstance(d, ImageMechanismDistribution), d.log_prob(d.sample()).shape
        (True, torch.Size([]))
    """

    def log_prob(self, value: Tensor) -> Tensor:
        mech = self.mechanism
        if mech is not None and mech.training and getattr(mech, "dequantize", False):
            value = dequantize(value, "uniform")
        return super().log_prob(value)


# --------------------------------------------------------------- mechanism
class ImageFlowMechanism(Mechanism):
    """A conditional Glow ``x = f(u; parents)`` for an image-valued site.

    Values are intensities in ``[0, 256)`` (0-255 integers plus dequantisation noise);
    the noise ``u`` is standard normal with the image's shape ``(C, H, W)``.

    :param event_shape: ``(C, H, W)``, with ``H, W`` divisible by ``2**levels``.
    :param parents: ordered ``name -> event shape`` of the parents (scalars, vectors
        and images alike are flattened into the context).
    :param levels: scales of the multi-scale architecture.
    :param steps: Glow steps (ActNorm, 1x1 conv, coupling) per level.
    :param hidden: channels of the coupling networks.
    :param alpha: margin of the logit preprocessing.
    :param dequantize: add ``U[0, 1)`` to values scored in training mode.
    :param name: the site name, for error messages.

    Example::

        >>> mech = ImageFlowMechanism((1, 4, 4), parents={"t": ()}, hidden=8)
        >>> d = mech(t=torch.randn(3))
        >>> x = d.sample()
        >>> x.shape, d.log_prob(x).shape
        (torch.Size([3, 1, 4, 4]), torch.Size([3]))
        >>> torch.allclose(d.from_noise(d.noise(x)), x, atol=1e-3)
        True
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        parents: Mapping[str, Any] | Sequence[str] | None = None,
        levels: int = 1,
        steps: int = 4,
        hidden: int = 32,
        alpha: float = 0.05,
        dequantize: bool = True,
        name: str | None = None,
    ) -> None:
        # the base class handles scalar / vector sites only: build it for a scalar
        # site (its value buffers stay unused) and set the image's shape here
        super().__init__((), parents, name)
        shape = tuple(int(s) for s in event_shape)
        if len(shape) != 3:
            raise ShapeError(f"{self._label()}: event shape {shape} is not (C, H, W)")
        c, h, w = shape
        if levels < 1 or h % 2**levels or w % 2**levels:
            raise ShapeError(
                f"{self._label()}: image {h} x {w} cannot be squeezed {levels} "
                "time(s); "
                f"H and W must be divisible by 2**levels = {2 ** max(levels, 0)}"
            )
        self.event_shape = shape
        self.features = c * h * w
        self.alpha, self.dequantize = float(alpha), bool(dequantize)
        self.net = GlowNet(shape, self.context_features, levels, steps, hidden)
        self._config = {"levels": levels, "steps": steps, "hidden": hidden}

    @property
    def config(self) -> dict[str, Any]:
        cfg = super().config
        del cfg["support"]
        return {
            **cfg,
            **self._config,
            "alpha": self.alpha,
            "dequantize": self.dequantize,
        }

    def _std_context(self, ctx: Tensor | None) -> Tensor | None:
        return None if ctx is None else (ctx - self.context_loc) / self.context_scale

    @torch.no_grad()
    def standardize_from(self, value: Tensor, context: Tensor | None = None) -> None:
        """Standardise the context and data-initialise every ActNorm layer.

        :param value: training images ``(*batch, C, H, W)`` (0-255 integers, or
            dequantised); up to 1,024 of them initialise ActNorm.
        :param context: the matching raw context.
        """
        if context is not None and self.context_features:
            c = context.reshape(-1, self.context_features).to(self.context_loc)
            self.context_loc.copy_(c.mean(0))
            self.context_scale.copy_(_safe_std(c))
        x = value.reshape(-1, *self.event_shape).to(self._zero)
        ctx = None
        if context is not None:
            ctx = context.reshape(-1, self.context_features).to(self._zero)
            ctx = self._std_context(ctx)[: x.shape[0]]  # type: ignore[index]
            ctx = ctx.expand(x.shape[0], -1) if ctx.shape[0] == 1 else ctx
        keep = slice(0, min(x.shape[0], 1024))
        x = dequantize(x[keep], "uniform") if self.dequantize else x[keep]
        to_noise = ImageToNoiseTransform(
            self.net, None, self.event_shape, self.alpha, self._label()
        )
        z, _ = to_noise._logit(x)
        self.net(z, None if ctx is None else ctx[keep], init=True)

    def transform(self, context: Tensor | None) -> ImageToNoiseTransform:
        """The map from images to noise at a raw (unstandardised) ``context``."""
        return ImageToNoiseTransform(
            self.net,
            self._std_context(context),
            self.event_shape,
            self.alpha,
            self._label(),
        )

    def at_context(self, ctx: Tensor | None) -> ImageMechanismDistribution:
        """``p(x | parents)`` from a raw flattened context, batched as it broadcasts."""
        batch = () if ctx is None else tuple(ctx.shape[:-1])
        zero = self._zero.expand(torch.Size((*batch, *self.event_shape)))
        base = dist.Normal(zero, torch.ones_like(zero)).to_event(3)
        return ImageMechanismDistribution(
            base,
            self.transform(ctx),
            mechanism=self,
            context=ctx,  # type: ignore[arg-type]
        )


def bits_per_dim(log_prob: Tensor, event_shape: Sequence[int]) -> Tensor:
    """Convert a log-density of images in ``[0, 256)`` intensity units to bits / dim.

    With uniform dequantisation, ``-log p(x + v) / (D log 2)`` upper-bounds the
    discrete negative log-likelihood of the 0-255 image in bits per dimension.

    Example::

        >>> float(bits_per_dim(torch.tensor(-8 * math.log(2) * 16), (1, 4, 4)))
        8.0
    """
    return -log_prob / (math.prod(event_shape) * math.log(2.0))
