"""Inference: fitting mechanisms to data (and, later, abduction and effect estimation)."""

from pyro_causalgen.infer.fit import FitHistory, fit, negative_log_likelihood

__all__ = ["FitHistory", "fit", "negative_log_likelihood"]
