"""Amortised inference for decoder image mechanisms: fit by ELBO, abduct by encoder.

A program with an image site whose mechanism is an
:class:`~pyro_causalgen.mechanisms.image_decoder.ImageDecoderMechanism` has a latent
site ``z(image)`` per unit. This module provides

- :class:`ImageEncoder`: ``q(z | image, parents)``, a diagonal Gaussian from an MLP;
- :class:`AmortizedGuide`: the encoder as a Pyro guide for a latent site (``z(image)``
  when fitting, its noise site ``u(z(image))`` under a counterfactual handler);
- :func:`fit_amortized`: decoder, encoder and every other mechanism of the program
  fitted jointly by the ELBO (``TraceMeanField_ELBO``: analytic KL) on fully observed
  data, with uniform dequantisation of the images;
- :func:`amortized_posterior`: abduction of the latent for observed units as a
  :class:`~pyro_causalgen.infer.abduction.NoisePosterior`, which
  :func:`~pyro_causalgen.infer.counterfactual.counterfactual` takes as
  ``abduction=``: the twin-world handler then abducts the pixel noise exactly given
  ``z`` and decodes with the intervened parents;
- :func:`decoder_counterfactual`: the same three steps as batched tensor code
  (encode, hold ``z`` and the pixel noise fixed, decode with the new parents).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import TraceMeanField_ELBO
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyro_causalgen.errors import DataError
from pyro_causalgen.handlers.noise import noise_site_name
from pyro_causalgen.infer.abduction import NoisePosterior
from pyro_causalgen.infer.data import shuffled_batches
from pyro_causalgen.infer.fit import _Standardize
from pyro_causalgen.mechanisms.image import dequantize
from pyro_causalgen.mechanisms.image_decoder import (
    ImageDecoderMechanism,
    check_image,
    latent_site_name,
    mlp,
)
from pyro_causalgen.seeding import seeded_generator


class ImageEncoder(nn.Module):
    """``q(z | x, parents) = N(mu, diag(sigma^2))`` with ``(mu, log sigma) = MLP``.

    The image enters as ``x / 128 - 1``, the parents standardised by the decoder.

    :param decoder: the mechanism whose latent this encoder infers (its shapes and
        context standardisation are used; it is not a submodule).
    :param hidden_features: hidden widths of the MLP.

    Example::

        >>> from pyro_causalgen.mechanisms import ImageDecoderMechanism
        >>> dec = ImageDecoderMechanism((1, 4, 4), {"t": ()}, latent_dim=2)
        >>> enc = ImageEncoder(dec, (16,))
        >>> q = enc(dec, torch.rand(5, 1, 4, 4) * 255, t=torch.zeros(5))
        >>> q.batch_shape, q.event_shape
        (torch.Size([5]), torch.Size([2]))
    """

    def __init__(
        self, decoder: ImageDecoderMechanism, hidden_features: Sequence[int] = (128,)
    ) -> None:
        super().__init__()
        self.event_shape = tuple(decoder.event_shape)
        self.latent_dim = decoder.latent_dim
        self.hidden_features = tuple(hidden_features)
        self.net = mlp(
            decoder.features + decoder.context_features,
            2 * decoder.latent_dim,
            self.hidden_features,
        )

    def forward(
        self, decoder: ImageDecoderMechanism, image: Tensor, *args: Any, **kwargs: Any
    ) -> dist.TorchDistribution:
        """``q(z | image, parents)``, batch = the broadcast batch of image and parents.

        :param decoder: the decoder (for the context).
        :param image: ``(*batch, C, H, W)`` intensities in ``[0, 256)``.
        :param args: parent values, as for the decoder.
        :raises ShapeError: naming the decoder's site for a mis-shaped image.
        """
        check_image(image, self.event_shape, decoder._label())
        x = image.to(decoder._zero).flatten(-len(self.event_shape)) / 128.0 - 1.0
        inputs = [x]
        std = decoder.std_context(decoder.context(*args, **kwargs))
        if std is not None:
            inputs.append(std)
        batch = torch.broadcast_shapes(*(t.shape[:-1] for t in inputs))
        h = torch.cat([t.expand(*batch, t.shape[-1]) for t in inputs], -1)
        loc, raw = self.net(h).chunk(2, dim=-1)
        scale = torch.nn.functional.softplus(raw - 1.0) + 1e-4
        return dist.Normal(loc, scale).to_event(1)


class AmortizedGuide:
    """The encoder as a guide: ``site ~ q(z | observed image, observed parents)``.

    Called with the model's arguments (which it ignores), it samples the latent
    ``site`` once per unit inside ``pyro.plate(plate, N)``.

    :param decoder: the image mechanism.
    :param encoder: its :class:`ImageEncoder`.
    :param observations: ``site -> value``; must hold ``image_site`` and the
        decoder's parents, ``(N, ...)``.
    :param image_site: name of the image site.
    :param latent: name of the sample site to draw (default ``z(image_site)``).
    :param plate: the model's plate of the units (``None``: no plate).
    :param mean: draw ``Delta(mu)`` (the encoder's mean) instead of ``q``.

    Example::

        >>> import pyro.poutine as poutine
        >>> from pyro_causalgen.mechanisms import ImageDecoderMechanism
        >>> dec = ImageDecoderMechanism((1, 4, 4), {"t": ()}, latent_dim=2)
        >>> obs = {"image": torch.rand(3, 1, 4, 4) * 255, "t": torch.zeros(3)}
        >>> guide = AmortizedGuide(dec, ImageEncoder(dec, (8,)), obs)
        >>> poutine.trace(guide).get_trace().nodes["z(image)"]["value"].shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        decoder: ImageDecoderMechanism,
        encoder: ImageEncoder,
        observations: Mapping[str, Tensor],
        image_site: str = "image",
        latent: str | None = None,
        plate: str | None = "units",
        mean: bool = False,
    ) -> None:
        missing = [s for s in (image_site, *decoder.parents) if s not in observations]
        if missing:
            raise DataError(
                f"amortised guide for '{image_site}': no observation of {missing}"
            )
        self.decoder, self.encoder = decoder, encoder
        self.observations = observations
        self.image_site = image_site
        self.latent = latent or latent_site_name(image_site)
        self.plate, self.mean = plate, mean

    def posterior(self) -> dist.TorchDistribution:
        """``q(z | observations)``, batch ``(N,)``."""
        obs = self.observations
        parents = {p: obs[p] for p in self.decoder.parents}
        return self.encoder(self.decoder, obs[self.image_site], **parents)

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        q = self.posterior()
        if self.mean:
            q = dist.Delta(q.mean, event_dim=1)
        if self.plate is None:
            return pyro.sample(self.latent, q)
        with pyro.plate(self.plate, q.batch_shape[-1]):
            return pyro.sample(self.latent, q)


@dataclass
class AmortizedFitHistory:
    """What :func:`fit_amortized` did: negative ELBO per unit (nats)."""

    train_loss: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    steps: int = 0


def _check_data(
    data: Mapping[str, Any], decoder: ImageDecoderMechanism, image_site: str
) -> dict[str, Tensor]:
    needed = [image_site, *decoder.parents]
    missing = [s for s in needed if s not in data]
    if missing:
        raise DataError(f"fit_amortized: no column for site(s) {missing}")
    ref = decoder._zero
    out = {}
    for k, v in data.items():
        v = torch.as_tensor(v).to(ref.device)
        out[k] = v.to(ref.dtype) if v.is_floating_point() else v
    rows = {k: v.shape[0] for k, v in out.items()}
    if len(set(rows.values())) != 1:
        raise DataError(f"fit_amortized: columns have different lengths {rows}")
    check_image(out[image_site], decoder.event_shape, f"site '{image_site}'")
    for k, v in out.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise DataError(f"fit_amortized: column '{k}' has NaN or inf")
    return out


def fit_amortized(
    model: Callable,
    decoder: ImageDecoderMechanism,
    encoder: ImageEncoder,
    data: Mapping[str, Any],
    *,
    image_site: str = "image",
    plate: str | None = "units",
    units_arg: str | None = "n",
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    clip_norm: float | None = 10.0,
    standardize: bool = True,
    seed: int | None = None,
    disable_progbar: bool = True,
) -> AmortizedFitHistory:
    """Fit a program with a decoder image site and its encoder by the ELBO.

    Every observed site (``data`` has one column per site except the latent
    ``z(image_site)``) contributes its log-likelihood; the latent contributes
    ``E_q[log p(x | z, pa)] - KL(q(z | x, pa) || N(0, I))``. Images (0-255 integers)
    are dequantised with fresh ``U[0, 1)`` noise at every step. Parameters of the model
    (an ``nn.Module``, or the decoder alone otherwise) and of the encoder are updated
    by Adam.

    :param model: the program, called as ``model(**{units_arg: rows})``.
    :param decoder: its image mechanism.
    :param encoder: an :class:`ImageEncoder` of ``decoder``.
    :param data: ``site -> (N, *event)``.
    :param plate: the model's plate of the units.
    :param epochs: passes over the rows.
    :param standardize: set the mechanisms' standardisation from the data first.
    :param seed: seed of the shuffling and of the dequantisation / ELBO draws (a
        private generator for the order; the global RNG is forked and restored).
    :returns: an :class:`AmortizedFitHistory`.
    :raises DataError: naming the missing or malformed column.

    Example::

        >>> from pyro_causalgen.datasets.morpho import MorphoDecoderModel, sample_morpho
        >>> data, _ = sample_morpho(64, size=8, seed=0)
        >>> model = MorphoDecoderModel(size=8, latent_dim=2, hidden_features=(16,))
        >>> enc = ImageEncoder(model.image, (16,))
        >>> hist = fit_amortized(model, model.image, enc, data, epochs=2, seed=0)
        >>> len(hist.train_loss)
        2
    """
    tensors = _check_data(data, decoder, image_site)
    n_rows = next(iter(tensors.values())).shape[0]
    device = decoder._zero.device

    def call(rows: int) -> dict[str, Any]:
        return {units_arg: rows} if units_arg else {}

    if standardize:
        with torch.no_grad():
            ctx = decoder.context(**{p: tensors[p] for p in decoder.parents})
            decoder.standardize_from(tensors[image_site], ctx)
            with _Standardize():
                poutine.condition(model, data=tensors)(**call(n_rows))

    modules: list[nn.Module] = [encoder]
    modules.append(model if isinstance(model, nn.Module) else decoder)
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=lr)
    elbo = TraceMeanField_ELBO()
    gen = seeded_generator(seed)
    history = AmortizedFitHistory()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        for _ in tqdm(range(epochs), disable=disable_progbar, desc="fit_amortized"):
            if isinstance(model, nn.Module):
                model.train()
            total = 0.0
            for rows, batch in shuffled_batches(tensors, batch_size, gen):
                batch[image_site] = dequantize(batch[image_site], "uniform")
                guide = AmortizedGuide(decoder, encoder, batch, image_site, plate=plate)
                conditioned = poutine.condition(model, data=batch)
                loss = elbo.differentiable_loss(conditioned, guide, **call(rows)) / rows
                optim.zero_grad(set_to_none=True)
                loss.backward()
                if clip_norm is not None:
                    nn.utils.clip_grad_norm_(params, clip_norm)
                optim.step()
                value = float(loss.detach())
                history.step_loss.append(value)
                total += value * rows
                history.steps += 1
            history.train_loss.append(total / n_rows)
    if isinstance(model, nn.Module):
        model.eval()
    return history


def amortized_posterior(
    decoder: ImageDecoderMechanism,
    encoder: ImageEncoder,
    observations: Mapping[str, Tensor],
    *args: Any,
    image_site: str = "image",
    plate: str | None = "units",
    mean: bool = True,
    **kwargs: Any,
) -> NoisePosterior:
    """Abduction of the decoder's latent for observed units, for the world handlers.

    Under a counterfactual handler the latent ``z(image)`` becomes a noise site
    ``u(z(image))`` (equal to ``z``: its law is standard normal); this returns its
    encoder posterior as a :class:`NoisePosterior` to pass as ``abduction=`` to
    :func:`~pyro_causalgen.infer.counterfactual.counterfactual`. The image's pixel
    noise is then abducted exactly by the handler, given ``z``.

    :param observations: the factual values, images in ``[0, 256)`` (dequantised).
    :param args: the model's arguments (``kwargs`` likewise).
    :param mean: use the encoder's mean (a deterministic abduction) rather than a
        draw of ``q`` at each :meth:`NoisePosterior.sample`.

    Example::

        >>> from pyro_causalgen.datasets.morpho import MorphoDecoderModel, sample_morpho
        >>> from pyro_causalgen.infer.counterfactual import counterfactual
        >>> model = MorphoDecoderModel(size=8, latent_dim=2, hidden_features=(8,))
        >>> enc = ImageEncoder(model.image, (8,))
        >>> data, _ = sample_morpho(4, size=8, seed=0)
        >>> obs = {**data, "image": data["image"] + 0.5}
        >>> post = amortized_posterior(model.image, enc, obs, n=4)
        >>> out = counterfactual(model, obs, {"thickness": torch.tensor(3.0)}, n=4,
        ...                      abduction=post)
        >>> out["counterfactual"]["image"].shape
        torch.Size([4, 1, 8, 8])
    """
    site = noise_site_name(latent_site_name(image_site))
    guide = AmortizedGuide(
        decoder, encoder, observations, image_site, site, plate, mean
    )
    return NoisePosterior([site], "svi", guide=guide, args=args, kwargs=dict(kwargs))


@torch.no_grad()
def decoder_counterfactual(
    decoder: ImageDecoderMechanism,
    encoder: ImageEncoder,
    image: Tensor,
    factual: Mapping[str, Tensor],
    counterfactual: Mapping[str, Tensor],
    keep_pixel_noise: bool = True,
    mean: bool = True,
) -> Tensor:
    """Counterfactual images by abduction (encoder), action, prediction (decoder).

    ``z ~ q(z | x, pa)`` (its mean if ``mean``), ``eps = (x - loc(z, pa)) /
    scale(z, pa)``, then ``x' = loc(z, pa') + scale(z, pa') * eps``; with
    ``keep_pixel_noise=False`` the result is the decoder's mean ``loc(z, pa')`` (for
    ``pa' = pa``: the reconstruction).

    :param image: factual images ``(N, C, H, W)`` in ``[0, 256)`` (dequantised).
    :param factual: the parents' factual values, ``name -> (N, ...)``.
    :param counterfactual: the parents' counterfactual values.
    :returns: ``(N, C, H, W)`` continuous images.

    Example::

        >>> from pyro_causalgen.mechanisms import ImageDecoderMechanism
        >>> dec = ImageDecoderMechanism((1, 4, 4), {"t": ()}, latent_dim=2)
        >>> enc = ImageEncoder(dec, (8,))
        >>> x, t = torch.rand(3, 1, 4, 4) * 255, torch.zeros(3)
        >>> same = decoder_counterfactual(dec, enc, x, {"t": t}, {"t": t})
        >>> torch.allclose(same, x, atol=1e-3)
        True
    """
    q = encoder(decoder, image, **factual)
    z = q.mean if mean else q.sample()
    cf_ctx = decoder.context(**counterfactual)
    if not keep_pixel_noise:
        return decoder.from_noise(z, None, cf_ctx)
    eps = decoder.pixel_noise(image, z, decoder.context(**factual))
    return decoder.from_noise(z, eps, cf_ctx)


@torch.no_grad()
def reconstruction_error(
    decoder: ImageDecoderMechanism,
    z: Tensor,
    image: Tensor,
    parents: Mapping[str, Tensor],
) -> Tensor:
    """Per-image mean absolute error ``|x - loc(z, pa)|``, shape ``(N,)``.

    Example::

        >>> from pyro_causalgen.mechanisms import ImageDecoderMechanism
        >>> dec = ImageDecoderMechanism((1, 4, 4), {"t": ()}, latent_dim=2)
        >>> x = dec.from_noise(torch.zeros(2, 2), None, dec.context(t=torch.ones(2)))
        >>> reconstruction_error(dec, torch.zeros(2, 2), x, {"t": torch.ones(2)})
        tensor([0., 0.])
    """
    loc = decoder.from_noise(z, None, decoder.context(**parents))
    return (image - loc).abs().flatten(-3).mean(-1)


__all__ = [
    "AmortizedFitHistory",
    "AmortizedGuide",
    "ImageEncoder",
    "amortized_posterior",
    "decoder_counterfactual",
    "fit_amortized",
    "reconstruction_error",
]
