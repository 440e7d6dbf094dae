"""Evaluating image-valued causal generative models: bits / dim, interventions,
counterfactuals, and example grids.

The functions work on an explicit SCM given as ``mechanisms`` (``site -> Mechanism``,
in causal order) and ``parents`` (``site -> [parents]``), such as
:class:`~pyro_causalgen.datasets.morpho.MorphoFlowModel` exposes. Counterfactuals are
computed by exact abduction, action and prediction with
:meth:`MechanismDistribution.noise` / :meth:`~MechanismDistribution.from_noise`: the
noise of every site is shared between the factual and the counterfactual world.
Attributes of generated images are read by a ``measure`` function (for instance
:func:`~pyro_causalgen.datasets.morpho.measure_morpho`), which this module takes as an
argument so that it does not depend on any dataset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from pyro_causalgen.errors import CausalModelError, UnknownSiteError
from pyro_causalgen.infer.amortized import ImageEncoder, decoder_counterfactual
from pyro_causalgen.mechanisms.image import (
    ImageFlowMechanism,
    bits_per_dim,
    dequantize,
    quantize,
)
from pyro_causalgen.mechanisms.image_decoder import ImageDecoderMechanism

Measure = Callable[[Tensor], Mapping[str, Tensor]]


def _check_do(mechanisms: Mapping[str, nn.Module], do: Mapping[str, object]) -> None:
    bad = sorted(set(do) - set(mechanisms))
    if bad:
        raise UnknownSiteError(f"intervention on unknown site(s) {bad}")


def _as_value(value: object, like: Tensor | None, ref: Tensor, n: int | None) -> Tensor:
    v = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    if like is not None:
        return v.expand_as(like) if v.dim() == 0 else v.to(like)
    return v.expand(n) if v.dim() == 0 and n is not None else v


def _ref(mechanisms: Mapping[str, nn.Module]) -> Tensor:
    return next(iter(mechanisms.values()))._zero  # type: ignore[return-value]


@torch.no_grad()
def counterfactual(
    mechanisms: Mapping[str, nn.Module],
    parents: Mapping[str, Sequence[str]],
    observed: Mapping[str, Tensor],
    do: Mapping[str, object],
    image_dequantize: str = "center",
    encoders: Mapping[str, ImageEncoder] | None = None,
) -> dict[str, Tensor]:
    """Exact counterfactual values of fully observed units under the hard ``do``.

    Abduction ``u_v = f_v^{-1}(x_v; pa_v)`` at every site, action ``do``, prediction
    ``x'_v = f_v(u_v; pa'_v)`` in causal order. A decoder image site
    (:class:`~pyro_causalgen.mechanisms.image_decoder.ImageDecoderMechanism`) has its
    latent abducted by its encoder in ``encoders`` (the mean of ``q(z | x, pa)``) and
    its pixel noise exactly
    (:func:`~pyro_causalgen.infer.amortized.decoder_counterfactual`). Observed images
    (0-255 integers) are
    moved into the continuous space first (``image_dequantize``: ``"center"`` of the
    bin; ``"none"`` to use them as given); predicted images are continuous (see
    :func:`~pyro_causalgen.mechanisms.image.quantize`).

    :param mechanisms: ``site -> mechanism`` in causal order.
    :param parents: ``site -> parent sites``.
    :param observed: ``site -> (N, *event)`` factual values.
    :param do: ``site -> value`` (a scalar or ``(N, *event)``).
    :param encoders: ``site -> encoder`` for decoder image sites.
    :returns: ``site -> (N, *event)`` counterfactual values.
    :raises UnknownSiteError: for interventions on or observations missing for a site.
    :raises CausalModelError: for a decoder site without an encoder.
    """
    _check_do(mechanisms, do)
    missing = sorted(set(mechanisms) - set(observed))
    if missing:
        raise UnknownSiteError(f"counterfactual: no observation of site(s) {missing}")
    out: dict[str, Tensor] = {}
    for name, mech in mechanisms.items():
        x = observed[name]
        if name in do:
            out[name] = _as_value(do[name], x, _ref(mechanisms), None)
            continue
        is_image = isinstance(mech, (ImageFlowMechanism, ImageDecoderMechanism))
        if is_image and image_dequantize != "none":
            x = dequantize(x, image_dequantize)
        factual_pa = {p: observed[p] for p in parents[name]}
        cf_pa = {p: out[p] for p in parents[name]}
        if isinstance(mech, ImageDecoderMechanism):
            encoder = (encoders or {}).get(name)
            if encoder is None:
                raise CausalModelError(
                    f"site '{name}' has a decoder mechanism: pass its encoder as "
                    f"encoders={{'{name}': ...}}"
                )
            out[name] = decoder_counterfactual(mech, encoder, x, factual_pa, cf_pa)
            continue
        u = mech(**factual_pa).noise(x)
        out[name] = mech(**cf_pa).from_noise(u)
    return out


@torch.no_grad()
def sample_do(
    mechanisms: Mapping[str, nn.Module],
    parents: Mapping[str, Sequence[str]],
    n: int,
    do: Mapping[str, object] | None = None,
) -> dict[str, Tensor]:
    """Draw ``n`` units from the model under the hard intervention ``do``.

    :returns: ``site -> (n, *event)`` (images continuous, in ``[0, 256)``).
    """
    do = dict(do or {})
    _check_do(mechanisms, do)
    out: dict[str, Tensor] = {}
    for name, mech in mechanisms.items():
        if name in do:
            out[name] = _as_value(do[name], None, _ref(mechanisms), n)
            continue
        pa = {p: out[p] for p in parents[name]}
        if isinstance(mech, ImageDecoderMechanism):
            out[name] = mech(mech.prior().sample(torch.Size([n])), **pa).sample()
            continue
        d = mech(**pa)
        out[name] = d.sample(torch.Size([n]) if not parents[name] else torch.Size())
    return out


@torch.no_grad()
def image_bits_per_dim(
    mechanism: ImageFlowMechanism,
    images: Tensor,
    parent_values: Mapping[str, Tensor],
    samples: int = 1,
    batch_size: int = 256,
) -> float:
    """Mean bits / dim of 0-255 ``images`` under ``mechanism`` given their parents.

    Uniform dequantisation, ``samples`` draws per image: an upper bound of the
    discrete negative log-likelihood in bits per dimension. The mechanism is put in
    eval mode for the evaluation and restored afterwards.
    """
    was_training = mechanism.training
    mechanism.eval()
    total, n = 0.0, images.shape[0]
    try:
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            d = mechanism(**{k: v[sl] for k, v in parent_values.items()})
            for _ in range(samples):
                lp = d.log_prob(dequantize(images[sl], "uniform"))
                total += float(bits_per_dim(lp, mechanism.event_shape).sum())
    finally:
        mechanism.train(was_training)
    return total / (n * samples)


def attribute_errors(
    measured: Mapping[str, Tensor], truth: Mapping[str, Tensor]
) -> dict[str, float]:
    """Mean absolute error per attribute present in both mappings."""
    return {
        k: float((measured[k] - truth[k].to(measured[k])).abs().mean())
        for k in measured
        if k in truth
    }


def save_image_grid(
    rows: Mapping[str, Tensor], path: str | Path, columns: int = 8, dpi: int = 100
) -> Path:
    """Save images as a PNG grid, one labelled row per entry of ``rows``.

    :param rows: ``label -> (N, 1, H, W)`` 0-255 images; the first ``columns`` are
        shown.
    :returns: the path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = list(rows)
    cols = min(columns, min(int(v.shape[0]) for v in rows.values()))
    fig, axes = plt.subplots(
        len(labels), cols, figsize=(1.2 * cols, 1.3 * len(labels)), squeeze=False
    )
    for r, label in enumerate(labels):
        imgs = quantize(rows[label].detach().cpu().float())
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(
                imgs[c].reshape(imgs.shape[-2], imgs.shape[-1]).numpy(),
                cmap="gray",
                vmin=0,
                vmax=255,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def evaluate_counterfactuals(
    mechanisms: Mapping[str, nn.Module],
    parents: Mapping[str, Sequence[str]],
    observed: Mapping[str, Tensor],
    do: Mapping[str, object],
    truth: Mapping[str, Tensor],
    measure: Measure,
    image_site: str = "image",
    encoders: Mapping[str, ImageEncoder] | None = None,
) -> dict[str, float]:
    """How well the model's counterfactual images carry the intended attributes.

    :param truth: the exact counterfactual (``site -> (N, ...)``, including the true
        counterfactual image at ``image_site``), e.g. from re-rendering.
    :param measure: image ``(N, C, H, W) -> {attribute: (N,)}``.
    :param encoders: ``site -> encoder`` for decoder image sites.
    :returns: ``mae_<attr>``: measured attribute of the generated counterfactual image
        against the true counterfactual attribute; ``mae_<attr>_oracle``: the same for
        the measured true counterfactual image (the measurement's own error);
        ``mae_<attr>_vs_oracle``: generated vs true image, both measured (model error
        with the measurement's per-glyph bias cancelled); ``pixel_mae``.
    """
    cf = counterfactual(mechanisms, parents, observed, do, encoders=encoders)
    gen = quantize(cf[image_site])
    m_gen, m_true = measure(gen), measure(truth[image_site])
    out: dict[str, float] = {}
    for k in m_gen:
        if k not in truth:
            continue
        out[f"mae_{k}"] = float((m_gen[k] - truth[k].to(m_gen[k])).abs().mean())
        out[f"mae_{k}_oracle"] = float(
            (m_true[k] - truth[k].to(m_true[k])).abs().mean()
        )
        out[f"mae_{k}_vs_oracle"] = float((m_gen[k] - m_true[k]).abs().mean())
    out["pixel_mae"] = float((gen - truth[image_site].to(gen)).abs().mean())
    return out


def images_per_second(
    fn: Callable[[], Tensor], n_images: int, repeats: int = 3
) -> float:
    """Throughput of ``fn`` (producing ``n_images`` images), best of ``repeats``."""
    import time

    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        best = min(best, time.perf_counter() - start)
    return n_images / best
