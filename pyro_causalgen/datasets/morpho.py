"""A Morpho-MNIST-style SCM with images drawn by code: exact counterfactual images.

Three variables, after Castro et al. (2019) and Pawlowski et al. (2020, DeepSCM)::

    thickness  t = 0.5 + g,                          g ~ Gamma(10, rate 5)
    intensity  i = 64 + 191 * sigmoid(2 (t - 2.5) + 0.5 e),   e ~ N(0, 1)
    image      x = round(i * coverage(glyph, t))     glyph ~ p(glyph)

The glyph is a digit 0-9 drawn as jittered polylines (:data:`DIGIT_STROKES`) under a
random affine map: the glyph noise :class:`GlyphNoise`. Strokes are rendered with torch
ops by thresholding the distance to the polylines: a pixel whose centre lies within
``t / 2`` of a stroke is fully covered, coverage then falls linearly to 0 over one
pixel. Thickness is in pixels of the 28 x 28 image at every resolution. Since the
exogenous noise ``(g, e, glyph)`` is returned with every sample, interventional and
counterfactual images are exact: re-render with the intervened attributes and the same
glyph (:func:`morpho_counterfactual`).

:func:`measure_morpho` recovers thickness and intensity from an image alone (no
gradients, no ground truth): intensity from the brightest pixels, thickness from the
stroke's area and perimeter. It is what the evaluation applies to generated images.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import pyro
import torch
from torch import Tensor, nn

from pyro_causalgen.mechanisms.flows import FlowMechanism
from pyro_causalgen.mechanisms.image import ImageFlowMechanism
from pyro_causalgen.mechanisms.image_decoder import ImageDecoderMechanism
from pyro_causalgen.seeding import seeded_generator

#: Parents of each variable of the Morpho SCM.
MORPHO_GRAPH: dict[str, list[str]] = {
    "thickness": [],
    "intensity": ["thickness"],
    "image": ["thickness", "intensity"],
}

#: Resolution at which thickness is measured in pixels.
REFERENCE_SIZE = 28

# Digits as polylines in the unit box (x to the right, y downwards).
_ARC0 = [
    (0.5 + 0.3 * math.sin(a), 0.5 - 0.42 * math.cos(a))
    for a in [2 * math.pi * k / 12 for k in range(13)]
]
#: Strokes of each digit: lists of polylines, each a list of ``(x, y)`` points.
DIGIT_STROKES: list[list[list[tuple[float, float]]]] = [
    [_ARC0],
    [[(0.35, 0.25), (0.55, 0.08), (0.55, 0.92)]],
    [
        [
            (0.22, 0.28),
            (0.35, 0.1),
            (0.6, 0.08),
            (0.76, 0.25),
            (0.7, 0.45),
            (0.22, 0.9),
            (0.8, 0.9),
        ]
    ],
    [
        [
            (0.22, 0.15),
            (0.5, 0.08),
            (0.74, 0.2),
            (0.7, 0.4),
            (0.45, 0.48),
            (0.74, 0.6),
            (0.76, 0.8),
            (0.5, 0.92),
            (0.22, 0.85),
        ]
    ],
    [[(0.62, 0.92), (0.62, 0.08), (0.2, 0.65), (0.82, 0.65)]],
    [
        [
            (0.76, 0.1),
            (0.3, 0.1),
            (0.26, 0.45),
            (0.55, 0.42),
            (0.76, 0.58),
            (0.74, 0.8),
            (0.5, 0.92),
            (0.22, 0.85),
        ]
    ],
    [
        [
            (0.7, 0.1),
            (0.4, 0.3),
            (0.26, 0.6),
            (0.3, 0.85),
            (0.52, 0.92),
            (0.74, 0.78),
            (0.7, 0.58),
            (0.48, 0.52),
            (0.28, 0.62),
        ]
    ],
    [[(0.2, 0.1), (0.8, 0.1), (0.45, 0.92)]],
    [
        [
            (0.5, 0.48),
            (0.28, 0.35),
            (0.3, 0.15),
            (0.5, 0.08),
            (0.7, 0.15),
            (0.72, 0.35),
            (0.5, 0.48),
            (0.26, 0.65),
            (0.3, 0.86),
            (0.5, 0.92),
            (0.7, 0.86),
            (0.74, 0.65),
            (0.5, 0.48),
        ]
    ],
    [
        [
            (0.72, 0.38),
            (0.5, 0.48),
            (0.28, 0.38),
            (0.3, 0.15),
            (0.5, 0.08),
            (0.72, 0.15),
            (0.72, 0.38),
            (0.62, 0.92),
        ]
    ],
]


def _glyph_tables() -> tuple[Tensor, Tensor, Tensor]:
    """Padded ``points (10, P, 2)``, ``segments (10, S, 2)`` (point indices), mask."""
    points, segments = [], []
    for strokes in DIGIT_STROKES:
        pts: list[tuple[float, float]] = []
        segs: list[tuple[int, int]] = []
        for line in strokes:
            start = len(pts)
            pts.extend(line)
            segs.extend((start + k, start + k + 1) for k in range(len(line) - 1))
        points.append(pts)
        segments.append(segs)
    n_pts = max(len(p) for p in points)
    n_seg = max(len(s) for s in segments)
    pt = torch.zeros(10, n_pts, 2, dtype=torch.float64)
    sg = torch.zeros(10, n_seg, 2, dtype=torch.long)
    mask = torch.zeros(10, n_seg, dtype=torch.bool)
    for d in range(10):
        pt[d, : len(points[d])] = torch.tensor(points[d], dtype=torch.float64)
        sg[d, : len(segments[d])] = torch.tensor(segments[d])
        mask[d, : len(segments[d])] = True
    return pt, sg, mask


_POINTS, _SEGMENTS, _MASK = _glyph_tables()


@dataclass
class GlyphNoise:
    """The glyph part of the exogenous noise: which digit, and where its points are.

    :param digit: digit class, ``(N,)`` long.
    :param points: jittered, affinely mapped stroke points in the unit box,
        ``(N, P, 2)`` (padded; only points used by the digit's segments matter).
    """

    digit: Tensor
    points: Tensor

    def __getitem__(self, index: Tensor | slice | int) -> GlyphNoise:
        return GlyphNoise(self.digit[index], self.points[index])

    def __len__(self) -> int:
        return int(self.digit.shape[0])


@dataclass
class MorphoNoise:
    """All exogenous noise of the Morpho SCM for ``N`` units.

    :param gamma: ``g``, ``(N,)``: thickness is ``0.5 + g``.
    :param eps: ``e``, ``(N,)``: standard normal noise of the intensity.
    :param glyph: the :class:`GlyphNoise`.
    """

    gamma: Tensor
    eps: Tensor
    glyph: GlyphNoise

    def __getitem__(self, index: Tensor | slice | int) -> MorphoNoise:
        return MorphoNoise(self.gamma[index], self.eps[index], self.glyph[index])

    def __len__(self) -> int:
        return int(self.gamma.shape[0])


def sample_glyphs(
    n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> GlyphNoise:
    """Draw ``n`` glyphs: a uniform digit, point jitter and a random affine map.

    Example::

        >>> g = sample_glyphs(4, torch.Generator().manual_seed(0))
        >>> g.digit.shape, g.points.shape
        (torch.Size([4]), torch.Size([4, 13, 2]))
    """
    gen = generator
    digit = torch.randint(0, 10, (n,), generator=gen)
    pts = _POINTS[digit].to(dtype)
    pts = pts + 0.02 * torch.randn(pts.shape, generator=gen, dtype=dtype)
    angle = 0.12 * torch.randn(n, generator=gen, dtype=dtype)
    shear = 0.12 * torch.randn(n, generator=gen, dtype=dtype)
    scale = 0.85 + 0.2 * torch.rand(n, generator=gen, dtype=dtype)
    shift = 0.03 * torch.randn(n, 2, generator=gen, dtype=dtype)
    cos, sin = angle.cos(), angle.sin()
    mat = (
        torch.stack(
            [torch.stack([cos, -sin + shear], -1), torch.stack([sin, cos], -1)], -2
        )
        * scale[:, None, None]
    )
    centred = pts - 0.5
    pts = 0.5 + shift[:, None, :] + centred @ mat.transpose(-1, -2)
    return GlyphNoise(digit, pts)


def _segment_distance(pix: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance from pixels ``(..., Q, 1, 2)`` to segments ``(..., 1, S, 2)``."""
    ab = b - a
    denom = (ab * ab).sum(-1).clamp_min(1e-12)
    s = (((pix - a) * ab).sum(-1) / denom).clamp(0.0, 1.0)
    return (pix - a - s[..., None] * ab).norm(dim=-1)


def render_glyphs(
    glyph: GlyphNoise, thickness: Tensor, intensity: Tensor, size: int = 28
) -> Tensor:
    """Render glyphs with stroke ``thickness`` and foreground ``intensity``.

    :param glyph: ``N`` glyphs.
    :param thickness: ``(N,)``, in pixels of a 28 x 28 image.
    :param intensity: ``(N,)``, the value of a fully covered pixel (0-255).
    :param size: side of the square image in pixels.
    :returns: continuous images ``(N, 1, size, size)`` in ``[0, intensity]``
        (:func:`sample_morpho` rounds them to integers).
    """
    dtype, device = thickness.dtype, thickness.device
    n = len(glyph)
    pts = glyph.points.to(device=device, dtype=dtype)
    seg = _SEGMENTS.to(device)[glyph.digit.to(device)]  # (N, S, 2)
    mask = _MASK.to(device)[glyph.digit.to(device)]  # (N, S)
    idx = seg.reshape(n, -1, 1).expand(-1, -1, 2)
    ends = pts.gather(1, idx).reshape(n, -1, 2, 2)
    # the digit's unit box spans 20 of 28 pixels, centred, at every resolution
    px = size * (4.0 / 28.0 + (20.0 / 28.0) * ends)
    a, b = px[:, None, :, 0, :], px[:, None, :, 1, :]
    grid = torch.arange(size, device=device, dtype=dtype) + 0.5
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    pix = torch.stack([xx, yy], -1).reshape(1, -1, 1, 2)
    dist = _segment_distance(pix, a, b)  # (N, Q, S)
    dist = dist.masked_fill(~mask[:, None, :], math.inf).amin(-1)
    half = (thickness * (size / REFERENCE_SIZE) / 2)[:, None]
    coverage = (half + 1.0 - dist).clamp(0.0, 1.0)
    img = intensity[:, None] * coverage
    return img.reshape(n, 1, size, size)


def _as_values(value: float | Tensor, n: int, dtype: torch.dtype) -> Tensor:
    v = torch.as_tensor(value, dtype=dtype)
    return v.expand(n).clone() if v.dim() == 0 else v.to(dtype)


def morpho_mechanisms(
    noise: MorphoNoise,
    do: dict[str, float | Tensor] | None = None,
    size: int = 28,
) -> dict[str, Tensor]:
    """Evaluate the SCM from its exogenous ``noise`` under the intervention ``do``.

    :param noise: exogenous noise of ``N`` units.
    :param do: hard interventions on ``"thickness"`` and / or ``"intensity"`` (floats
        or ``(N,)`` tensors).
    :param size: image side in pixels.
    :returns: ``{"thickness": (N,), "intensity": (N,), "image": (N, 1, size, size)}``,
        the image rounded to integers in 0-255.
    """
    do = dict(do or {})
    unknown = sorted(set(do) - {"thickness", "intensity"})
    if unknown:
        raise ValueError(
            f"morpho: can intervene on 'thickness' and 'intensity' only, got {unknown}"
        )
    n, dtype = len(noise), noise.gamma.dtype
    t = (
        _as_values(do["thickness"], n, dtype)
        if "thickness" in do
        else 0.5 + noise.gamma
    )
    if "intensity" in do:
        i = _as_values(do["intensity"], n, dtype)
    else:
        i = 64.0 + 191.0 * torch.sigmoid(2.0 * (t - 2.5) + 0.5 * noise.eps)
    image = render_glyphs(noise.glyph, t, i, size).round().clamp(0.0, 255.0)
    return {"thickness": t, "intensity": i, "image": image}


def sample_morpho_noise(
    n: int, seed: int | None = None, dtype: torch.dtype = torch.float32
) -> MorphoNoise:
    """Draw the exogenous noise of ``n`` units (a generator seeded by ``seed``)."""
    gen = seeded_generator(seed)
    gamma = torch._standard_gamma(torch.full((n,), 10.0, dtype=torch.float64), gen) / 5
    eps = torch.randn(n, generator=gen, dtype=dtype)
    return MorphoNoise(gamma.to(dtype), eps, sample_glyphs(n, gen, dtype))


def sample_morpho(
    n: int,
    size: int = 28,
    seed: int | None = None,
    do: dict[str, float | Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, Tensor], MorphoNoise]:
    """Draw ``n`` units of the Morpho SCM (optionally under ``do``).

    :returns: the values (see :func:`morpho_mechanisms`) and the exogenous noise, which
        :func:`morpho_counterfactual` reuses.

    Example::

        >>> data, noise = sample_morpho(8, size=14, seed=0)
        >>> data["image"].shape, float(data["image"].max()) <= 255
        (torch.Size([8, 1, 14, 14]), True)
    """
    noise = sample_morpho_noise(n, seed, dtype)
    return morpho_mechanisms(noise, do, size), noise


def morpho_counterfactual(
    noise: MorphoNoise, do: dict[str, float | Tensor], size: int = 28
) -> dict[str, Tensor]:
    """Exact counterfactual: the same units (same noise) in the world where ``do``
    holds.

    Example::

        >>> data, noise = sample_morpho(4, size=14, seed=0)
        >>> cf = morpho_counterfactual(noise, {"thickness": 4.0}, size=14)
        >>> bool((cf["thickness"] == 4.0).all()), cf["image"].shape
        (True, torch.Size([4, 1, 14, 14]))
    """
    return morpho_mechanisms(noise, do, size)


# ------------------------------------------------------------------ measurement
#: Coverage (pixel / intensity) below which a pixel counts as background, and above
#: which it counts as the stroke's core, for the thickness measurement: pixels fainter
#: than ``FOREGROUND`` (20% of the intensity, 13 grey levels at the lowest intensity
#: 64) are ignored, so faint background noise of generated images does not count.
FOREGROUND, CORE = 0.2, 0.9

#: Linear calibration ``t = a + b * raw`` of the thickness estimate, per image size:
#: the inverse of the least-squares fit ``raw = c + d t`` on 20,000 renderer samples
#: (seed 123), so that the measurement is unbiased given the true thickness,
#: ``E[measure | t] = t``, which is what evaluating interventions needs.
THICKNESS_CALIBRATION: dict[int, tuple[float, float]] = {
    28: (-0.0109, 0.9899),
    14: (-0.0290, 0.9821),
}


@torch.no_grad()
def measure_morpho(images: Tensor, quantile: float = 0.98) -> dict[str, Tensor]:
    """Estimate stroke thickness and intensity of glyph images, from the pixels alone.

    - intensity ``i``: the median of the pixels within 90% of the ``quantile`` of the
      stroke's core (pixels brighter than half the brightest one): the level of the
      fully covered pixels, robust to zero-mean pixel noise;
    - thickness: a straight stroke of width ``w`` and length ``L`` rendered with a
      one-pixel linear edge, thresholded at coverage ``a`` (:data:`FOREGROUND`), has
      area ``A = L (w + 1 - a^2)`` (sum of the coverage ``x / i`` of the foreground
      pixels) and ``R = 2 L (b - a)`` edge pixels with coverage in ``(a, b)``
      (``b`` = :data:`CORE`), so ``w = 2 (b - a) A / R - 1 + a^2``. Junctions and
      caps bias this per glyph; the linear :data:`THICKNESS_CALIBRATION` of the image
      size (fitted to the renderer) removes the average bias. The result is in pixels
      of a 28 x 28 image.

    :param images: ``(*batch, 1, H, W)`` or ``(*batch, H, W)`` intensities 0-255.
    :param quantile: quantile of the core pixels that sets the intensity's scale.
    :returns: ``{"thickness": (*batch,), "intensity": (*batch,)}``.

    Example::

        >>> data, _ = sample_morpho(64, size=28, seed=0)
        >>> m = measure_morpho(data["image"])
        >>> bool(((m["thickness"] - data["thickness"]).abs().mean() < 0.35))
        True
    """
    x = images.squeeze(-3) if images.dim() >= 3 and images.shape[-3] == 1 else images
    if x.dim() < 2:
        raise ValueError(f"measure_morpho: images of shape {tuple(images.shape)}")
    x = x.detach().clamp(0.0, 255.0)
    size = x.shape[-1]
    batch = x.shape[:-2]
    flat = x.reshape(-1, x.shape[-2] * size)
    nan = torch.full_like(flat, math.nan)
    peak = flat.amax(-1, keepdim=True).clamp_min(1.0)
    core = torch.where(flat > 0.5 * peak, flat, nan)
    top = core.nanquantile(quantile, dim=-1, keepdim=True)
    full = torch.where(flat >= 0.9 * top, flat, nan)
    intensity = full.nanmedian(-1).values.nan_to_num(1.0).clamp_min(1.0)
    cov = (flat / intensity[:, None]).clamp(0.0, 1.0)
    a, b = FOREGROUND, CORE
    fg = cov > a
    area = (cov * fg).sum(-1)
    rim = (fg & (cov < b)).to(cov.dtype).sum(-1).clamp_min(1.0)
    raw = (2.0 * (b - a) * area / rim - 1.0 + a * a) * (REFERENCE_SIZE / size)
    c0, c1 = THICKNESS_CALIBRATION.get(size, (0.0, 1.0))
    thickness = c0 + c1 * raw
    return {
        "thickness": thickness.reshape(batch),
        "intensity": intensity.reshape(batch),
    }


# ------------------------------------------------------------------ a learned model
class _MorphoModel(nn.Module):
    """The Morpho SCM as a Pyro program: scalar NSF ``thickness`` (positive) and
    ``intensity`` given it, then an image mechanism on both (set by subclasses)."""

    parents = MORPHO_GRAPH

    def __init__(self, config: dict, flow_hidden: tuple[int, ...]) -> None:
        super().__init__()
        self._config = {**config, "flow_hidden": tuple(flow_hidden)}
        self.thickness = FlowMechanism(
            (),
            {},
            flow="nsf",
            transforms=2,
            hidden_features=flow_hidden,
            name="thickness",
            support="positive",
        )
        self.intensity = FlowMechanism(
            (),
            {"thickness": ()},
            flow="nsf",
            transforms=2,
            hidden_features=flow_hidden,
            name="intensity",
        )

    @property
    def config(self) -> dict:
        """Constructor arguments (for :func:`pyro_causalgen.io.save`)."""
        return dict(self._config)

    @property
    def mechanisms(self) -> dict[str, nn.Module]:
        """``site -> mechanism``, in causal order."""
        return {
            "thickness": self.thickness,
            "intensity": self.intensity,
            "image": self.image,
        }

    def _image_site(self, t: Tensor, i: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, n: int | None = None) -> dict[str, Tensor]:
        """Sample ``n`` units (one unbatched unit if ``None``)."""
        with pyro.plate("units", n) if n is not None else nullcontext():
            t = pyro.sample("thickness", self.thickness())
            i = pyro.sample("intensity", self.intensity(thickness=t))
            x = self._image_site(t, i)
        return {"thickness": t, "intensity": i, "image": x}


class MorphoFlowModel(_MorphoModel):
    """A learnable causal generative model for the Morpho SCM, as a Pyro program.

    ``thickness`` and ``intensity`` are scalar NSF mechanisms, ``image`` a conditional
    Glow (:class:`~pyro_causalgen.mechanisms.image.ImageFlowMechanism`) on both; each
    stands at a ``pyro.sample`` site inside a plate ``"units"``, so :func:`fit`, the
    ``do`` handler and the counterfactual handlers apply unchanged.

    :param size: image side (divisible by ``2**levels``).
    :param levels: Glow scales (default: 2 for 28 x 28, 1 otherwise).
    :param steps: Glow steps per level.
    :param hidden: coupling channels.
    :param flow_hidden: hidden widths of the scalar NSF mechanisms.

    Example::

        >>> model = MorphoFlowModel(size=14, steps=1, hidden=8)
        >>> {k: tuple(v.shape) for k, v in model(n=3).items()}
        {'thickness': (3,), 'intensity': (3,), 'image': (3, 1, 14, 14)}
    """

    def __init__(
        self,
        size: int = 28,
        levels: int | None = None,
        steps: int = 4,
        hidden: int = 32,
        flow_hidden: tuple[int, ...] = (32, 32),
    ) -> None:
        levels = (
            (2 if size % 4 == 0 and size >= 28 else 1) if levels is None else levels
        )
        config = {"size": size, "levels": levels, "steps": steps, "hidden": hidden}
        super().__init__(config, flow_hidden)
        self.image = ImageFlowMechanism(
            (1, size, size),
            {"thickness": (), "intensity": ()},
            levels=levels,
            steps=steps,
            hidden=hidden,
            name="image",
        )

    def _image_site(self, t: Tensor, i: Tensor) -> Tensor:
        return pyro.sample("image", self.image(thickness=t, intensity=i))


class MorphoDecoderModel(_MorphoModel):
    """The Morpho SCM with a decoder image mechanism (DeepSCM's conditional VAE).

    ``thickness`` and ``intensity`` are scalar NSF mechanisms as in
    :class:`MorphoFlowModel`; ``image`` is an
    :class:`~pyro_causalgen.mechanisms.image_decoder.ImageDecoderMechanism` with its
    latent at site ``z(image)``. Fit it with
    :func:`~pyro_causalgen.infer.amortized.fit_amortized`.

    :param size: image side.
    :param latent_dim: dimension of the image latent.
    :param hidden_features: hidden widths of the decoder.
    :param flow_hidden: hidden widths of the scalar NSF mechanisms.

    Example::

        >>> model = MorphoDecoderModel(size=14, latent_dim=4, hidden_features=(32,))
        >>> {k: tuple(v.shape) for k, v in model(n=3).items()}
        {'thickness': (3,), 'intensity': (3,), 'image': (3, 1, 14, 14)}
    """

    def __init__(
        self,
        size: int = 28,
        latent_dim: int = 8,
        hidden_features: tuple[int, ...] = (256,),
        flow_hidden: tuple[int, ...] = (32, 32),
    ) -> None:
        config = {
            "size": size,
            "latent_dim": latent_dim,
            "hidden_features": tuple(hidden_features),
        }
        super().__init__(config, flow_hidden)
        self.image = ImageDecoderMechanism(
            (1, size, size),
            {"thickness": (), "intensity": ()},
            latent_dim=latent_dim,
            hidden_features=hidden_features,
            name="image",
        )

    def _image_site(self, t: Tensor, i: Tensor) -> Tensor:
        return self.image.sample_site("image", thickness=t, intensity=i)
