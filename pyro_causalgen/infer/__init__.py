"""Inference: fitting mechanisms to data, abduction of noise, counterfactuals."""

from pyro_causalgen.infer.abduction import NoisePosterior, abduct
from pyro_causalgen.infer.amortized import (
    AmortizedGuide,
    ImageEncoder,
    amortized_posterior,
    decoder_counterfactual,
    fit_amortized,
)
from pyro_causalgen.infer.counterfactual import counterfactual
from pyro_causalgen.infer.fit import FitHistory, fit, negative_log_likelihood

__all__ = [
    "AmortizedGuide",
    "ImageEncoder",
    "amortized_posterior",
    "decoder_counterfactual",
    "fit_amortized",
    "FitHistory",
    "NoisePosterior",
    "abduct",
    "counterfactual",
    "fit",
    "negative_log_likelihood",
]
