"""The shipped triangle dataset matches its generator; its closed forms are right."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_causalgen.datasets import load_triangle, sample_triangle, triangle_effect
from pyro_causalgen.datasets.triangle import TRIANGLE_ROWS, TRIANGLE_SEED


def test_shipped_csv_is_the_seeded_sample():
    shipped = load_triangle()
    fresh = sample_triangle(TRIANGLE_ROWS, seed=TRIANGLE_SEED)
    for k in ("x", "z", "y"):
        assert torch.allclose(shipped[k].double(), fresh[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("var,value", [("x", -1.0), ("x", 0.5), ("z", 1.5)])
def test_closed_form_effect_matches_simulation(var, value):
    y = sample_triangle(200_000, seed=1, do={var: value})["y"]
    se = y.std().item() / math.sqrt(len(y))
    assert abs(y.mean().item() - triangle_effect(var, value)) < 5 * se
