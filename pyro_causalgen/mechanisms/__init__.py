"""Mechanisms: conditional distributions with an explicit noise form, for sample sites.

Each mechanism is an :class:`torch.nn.Module`; called with the parent values it returns
a :class:`MechanismDistribution` (a Pyro ``TransformedDistribution``) that stands at a
``pyro.sample`` site, with exact ``log_prob``, exact inverse
(:meth:`~MechanismDistribution.noise`) and a device and dtype that follow the module.
"""

from pyro_causalgen.mechanisms.base import Mechanism
from pyro_causalgen.mechanisms.discrete import BernoulliMechanism, CategoricalMechanism
from pyro_causalgen.mechanisms.distribution import (
    MechanismDistribution,
    ToNoiseTransform,
)
from pyro_causalgen.mechanisms.flows import FlowMechanism, MAFMechanism, NSFMechanism
from pyro_causalgen.mechanisms.image import (
    ImageFlowMechanism,
    ImageMechanismDistribution,
    ImageToNoiseTransform,
    bits_per_dim,
    dequantize,
    quantize,
)
from pyro_causalgen.mechanisms.image_decoder import (
    ImageDecoderMechanism,
    latent_site_name,
)
from pyro_causalgen.mechanisms.locscale import LocScaleMechanism
from pyro_causalgen.mechanisms.stacked import StackedFlowMechanism, StackedFlows

__all__ = [
    "BernoulliMechanism",
    "CategoricalMechanism",
    "FlowMechanism",
    "ImageDecoderMechanism",
    "ImageFlowMechanism",
    "ImageMechanismDistribution",
    "ImageToNoiseTransform",
    "LocScaleMechanism",
    "MAFMechanism",
    "Mechanism",
    "MechanismDistribution",
    "NSFMechanism",
    "StackedFlowMechanism",
    "StackedFlows",
    "ToNoiseTransform",
    "bits_per_dim",
    "dequantize",
    "latent_site_name",
    "make_mechanism",
    "quantize",
]


def make_mechanism(kind: str, **kwargs):  # type: ignore[no-untyped-def]
    """Build a mechanism by name: ``"nsf"``, ``"maf"``, ``"locscale"``, ``"glow"``,
    ``"decoder"`` (an image decoder with its own latent), ``"categorical"`` (pass
    ``num_categories``) or ``"bernoulli"``.

    Example::

        >>> make_mechanism("maf", parents=["x"]).config["flow"]
        'maf'
    """
    kind = kind.lower()
    if kind in ("nsf", "maf"):
        return FlowMechanism(flow=kind, **kwargs)
    if kind in ("locscale", "affine", "gaussian"):
        return LocScaleMechanism(**kwargs)
    if kind in ("glow", "image"):
        return ImageFlowMechanism(**kwargs)
    if kind in ("decoder", "vae"):
        return ImageDecoderMechanism(**kwargs)
    if kind in ("categorical", "bernoulli"):
        if kwargs.pop("event_shape", ()) not in ((), []):
            raise ValueError(f"a {kind} mechanism has a scalar event shape")
        if kind == "bernoulli":
            return BernoulliMechanism(**kwargs)
        return CategoricalMechanism(kwargs.pop("num_categories"), **kwargs)
    raise ValueError(
        f"unknown mechanism {kind!r}; use 'nsf', 'maf', 'locscale', 'glow', "
        "'decoder', 'categorical' or 'bernoulli'"
    )
