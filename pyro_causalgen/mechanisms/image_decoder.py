"""Image mechanisms with their own latent: ``x = loc(z, pa) + scale(z, pa) * eps``.

The DeepSCM recipe (Pawlowski et al., 2020) for an image-valued site whose mechanism
is a decoder rather than a flow: a latent ``z ~ N(0, I_L)`` of the site, a decoder
network from ``(z, parents)`` to a per-pixel mean and scale, and Gaussian pixel noise
``eps ~ N(0, I)`` on intensities in ``[0, 256)``. The site's exogenous noise is the pair
``(z, eps)``; ``eps`` is recovered exactly from an image once ``z`` is known, and ``z``
is inferred by an amortised encoder (:mod:`pyro_causalgen.infer.amortized`).

In a program the mechanism is two ``pyro.sample`` sites, the latent ``z(<site>)``
(:func:`latent_site_name`) and the image itself, both written by
:meth:`ImageDecoderMechanism.sample_site`; the image's distribution is a plain
``Normal(loc, scale).to_event(3)``, which every counterfactual handler of this package
understands (its pixel noise is shared across worlds like any location-scale noise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyro_causalgen.errors import ShapeError
from pyro_causalgen.mechanisms.base import Mechanism, _safe_std

Shape = tuple[int, ...]


def latent_site_name(name: str) -> str:
    """Name of the sample site that holds the latent of image site ``name``.

    Example::

        >>> latent_site_name("image")
        'z(image)'
    """
    return f"z({name})"


def mlp(in_features: int, out_features: int, hidden: Sequence[int]) -> nn.Sequential:
    """A ReLU multi-layer perceptron ``in -> hidden... -> out``.

    Example::

        >>> mlp(3, 2, (8,))(torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def check_image(value: Tensor, shape: Shape, label: str) -> None:
    """Raise :class:`ShapeError` naming ``label`` unless ``value`` is
    ``(*batch, *shape)``."""
    k = len(shape)
    if value.dim() < k or tuple(value.shape[value.dim() - k :]) != tuple(shape):
        raise ShapeError(
            f"{label}: image of shape {tuple(value.shape)}, expected "
            f"(*batch, {', '.join(map(str, shape))})"
        )


class ImageDecoderMechanism(Mechanism):
    """A decoder mechanism ``x = loc(z, pa) + scale(z, pa) * eps`` for an image site.

    ``z ~ N(0, I_latent_dim)`` is the site's own latent, ``eps ~ N(0, I)`` pixel noise;
    ``loc = 256 * sigmoid(a)`` and ``scale = min_scale + 255 * sigmoid(b - 2)`` with
    ``(a, b) = MLP(z, standardised parents)``. Values are intensities in ``[0, 256)``
    (0-255 integers after dequantisation, see
    :func:`~pyro_causalgen.mechanisms.image.dequantize`).

    :param event_shape: ``(C, H, W)``.
    :param parents: ordered ``name -> event shape`` of the parents.
    :param latent_dim: dimension ``L`` of ``z``.
    :param hidden_features: hidden widths of the decoder MLP.
    :param min_scale: smallest pixel noise scale (intensity units).
    :param name: the site name, for error messages.

    Example::

        >>> mech = ImageDecoderMechanism((1, 4, 4), {"t": ()}, latent_dim=2)
        >>> z = mech.prior().sample((3,))
        >>> d = mech(z, t=torch.zeros(3))
        >>> d.batch_shape, d.event_shape
        (torch.Size([3]), torch.Size([1, 4, 4]))
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        parents: Mapping[str, Any] | Sequence[str] | None = None,
        latent_dim: int = 8,
        hidden_features: Sequence[int] = (128,),
        min_scale: float = 0.3,
        name: str | None = None,
    ) -> None:
        super().__init__((), parents, name)
        shape = tuple(int(s) for s in event_shape)
        if len(shape) != 3:
            raise ShapeError(f"{self._label()}: event shape {shape} is not (C, H, W)")
        if latent_dim < 1:
            raise ShapeError(f"{self._label()}: latent_dim must be >= 1")
        self.event_shape = shape
        self.features = math.prod(shape)
        self.latent_dim = int(latent_dim)
        self.hidden_features = tuple(int(h) for h in hidden_features)
        self.min_scale = float(min_scale)
        self.net = mlp(
            self.latent_dim + self.context_features,
            2 * self.features,
            self.hidden_features,
        )

    @property
    def config(self) -> dict[str, Any]:
        cfg = super().config
        del cfg["support"]
        return {
            **cfg,
            "latent_dim": self.latent_dim,
            "hidden_features": self.hidden_features,
            "min_scale": self.min_scale,
        }

    # ------------------------------------------------------------------ context
    def std_context(self, context: Tensor | None) -> Tensor | None:
        """The standardised context ``(*batch, K)`` of a raw one."""
        if context is None:
            return None
        return (context - self.context_loc) / self.context_scale

    @torch.no_grad()
    def standardize_from(self, value: Tensor, context: Tensor | None = None) -> None:
        """Standardise the context and start the decoder at the mean image.

        :param value: training images ``(*batch, C, H, W)`` in ``[0, 256)``.
        :param context: the matching raw context ``(*batch, K)``.
        """
        check_image(value, self.event_shape, self._label())
        if context is not None and self.context_features:
            c = context.reshape(-1, self.context_features).to(self.context_loc)
            self.context_loc.copy_(c.mean(0))
            self.context_scale.copy_(_safe_std(c))
        mean = value.reshape(-1, self.features).to(self._zero).mean(0)
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        last.bias[: self.features].copy_(torch.logit((mean / 256.0).clamp(0.01, 0.99)))

    # ------------------------------------------------------------------- decode
    def prior(self, batch_shape: Sequence[int] = ()) -> dist.TorchDistribution:
        """The latent's law ``N(0, I_L)``, batch ``batch_shape``, event ``(L,)``."""
        zero = self._zero.expand(torch.Size((*batch_shape, self.latent_dim)))
        return dist.Normal(zero, torch.ones_like(zero)).to_event(1)

    def loc_scale(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Pixel mean and scale, each ``(*batch, C, H, W)``, at a raw ``context``.

        ``batch`` broadcasts ``z``'s batch dims ``(*bz, L)`` against the context's.
        """
        if z.dim() < 1 or z.shape[-1] != self.latent_dim:
            raise ShapeError(
                f"{self._label()}: latent of shape {tuple(z.shape)}, expected "
                f"(*batch, {self.latent_dim})"
            )
        inputs = [z]
        std = self.std_context(context)
        if std is not None:
            inputs.append(std.to(z))
        batch = torch.broadcast_shapes(*(t.shape[:-1] for t in inputs))
        h = torch.cat([t.expand(*batch, t.shape[-1]) for t in inputs], -1)
        a, b = self.net(h).chunk(2, dim=-1)
        loc = 256.0 * torch.sigmoid(a)
        scale = self.min_scale + 255.0 * torch.sigmoid(b - 2.0)
        shape = (*batch, *self.event_shape)
        return loc.reshape(shape), scale.reshape(shape)

    def at_latent(self, z: Tensor, context: Tensor | None) -> dist.TorchDistribution:
        """``p(x | z, parents)`` from a raw flattened context (see :meth:`forward`)."""
        loc, scale = self.loc_scale(z, context)
        return dist.Normal(loc, scale).to_event(3)

    def at_context(self, context: Tensor | None) -> dist.TorchDistribution:  # type: ignore[override]
        """Not defined: ``p(x | parents)`` needs the latent; see :meth:`at_latent`."""
        raise TypeError(
            f"{self._label()}: a decoder mechanism has no closed-form p(x | parents); "
            "use at_latent(z, context) or sample_site(name, ...) in a program"
        )

    def forward(self, z: Tensor, *args: Any, **kwargs: Any) -> dist.TorchDistribution:  # type: ignore[override]
        """``p(x | z, parents)``: ``Normal(loc, scale).to_event(3)``.

        :param z: latent ``(*batch, L)``.
        :param args: parent values (positional, in the order of ``parents``).
        :param kwargs: parent values by name.
        """
        return self.at_latent(z, self.context(*args, **kwargs))

    def sample_site(self, name: str, *args: Any, **kwargs: Any) -> Tensor:
        """Write the mechanism into a program: sites ``z(name)`` and ``name``.

        Call it inside the plate of the units (the latent has no batch dims of its
        own; the plates give it one draw per unit).

        :returns: the image, ``(*plates, C, H, W)``.
        """
        z = pyro.sample(latent_site_name(name), self.prior())
        return pyro.sample(name, self(z, *args, **kwargs))

    def pixel_noise(self, x: Tensor, z: Tensor, context: Tensor | None) -> Tensor:
        """Abduction of the pixel noise: ``eps = (x - loc(z, pa)) / scale(z, pa)``."""
        check_image(x, self.event_shape, self._label())
        loc, scale = self.loc_scale(z, context)
        return (x - loc) / scale

    def from_noise(
        self, z: Tensor, eps: Tensor | None, context: Tensor | None
    ) -> Tensor:
        """Prediction: ``loc(z, pa) + scale(z, pa) * eps`` (the mean if ``eps`` is
        ``None``)."""
        loc, scale = self.loc_scale(z, context)
        return loc if eps is None else loc + scale * eps
