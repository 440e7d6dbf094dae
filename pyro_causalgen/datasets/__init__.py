"""Synthetic SCMs with known ground truth and small shipped datasets."""

from pyro_causalgen.datasets.triangle import (
    TRIANGLE_GRAPH,
    load_triangle,
    sample_triangle,
    triangle_effect,
)

__all__ = ["TRIANGLE_GRAPH", "load_triangle", "sample_triangle", "triangle_effect"]
