"""Counterfactual images keep the unit's identity: the glyph, and the attribute that an
intervention leaves alone, after a short fit of a tiny conditional Glow on 14 x 14."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_causalgen.datasets.morpho import (
    MorphoFlowModel,
    measure_morpho,
    morpho_counterfactual,
    sample_morpho,
)
from pyro_causalgen.infer.fit import fit
from pyro_causalgen.infer.image_eval import counterfactual
from pyro_causalgen.mechanisms.image import quantize

N_TEST = 128


def glyph_matches(
    cf: torch.Tensor, reference: torch.Tensor, digit: torch.Tensor
) -> float:
    """Share of units whose binarised counterfactual correlates more with its own
    reference glyph than with every reference glyph of another digit.

    Images are binarised at 30% of their brightest pixel (the stroke, whatever the
    intensity) and compared by Pearson correlation over pixels.
    """

    def unit(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        b = (flat > 0.3 * flat.amax(1, keepdim=True)).to(torch.float64)
        b = b - b.mean(1, keepdim=True)
        return b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)

    corr = unit(cf) @ unit(reference).T  # (cf unit, reference unit)
    other = digit[None, :] != digit[:, None]
    best_other = corr.masked_fill(~other, -2.0).amax(1)
    return float((corr.diagonal() > best_other).to(torch.float64).mean())


@pytest.fixture(scope="module")
def tiny_flow():
    """MorphoFlowModel(14 x 14, 2 Glow steps, 16 channels), 3 epochs on 1,024 units."""
    pyro.set_rng_seed(0)
    data, _ = sample_morpho(1024, size=14, seed=0)
    model = MorphoFlowModel(size=14, steps=2, hidden=16, flow_hidden=(8,))
    fit(model, data, epochs=3, batch_size=64, lr=3e-3, seed=0, patience=None)
    model.eval()
    test, noise = sample_morpho(N_TEST, size=14, seed=1)
    return model, test, noise


def _cf(model, test, do):
    out = counterfactual(model.mechanisms, model.parents, test, do)
    return quantize(out["image"])


def test_glyph_matcher_is_discriminative(tiny_flow):
    """The criterion can fail: the exact (re-rendered) counterfactuals match their own
    glyph, shuffled units match at chance level."""
    _, _, noise = tiny_flow
    digit = noise.glyph.digit
    truth = morpho_counterfactual(noise, {"thickness": 4.0}, size=14)["image"]
    assert glyph_matches(truth, truth, digit) == 1.0
    shuffled = torch.roll(torch.arange(N_TEST), 1)
    assert glyph_matches(truth[shuffled], truth, digit) < 0.2


@pytest.mark.parametrize(
    "do", [{"thickness": 4.0}, {"thickness": 1.5}, {"intensity": 100.0}]
)
def test_counterfactual_keeps_the_glyph(tiny_flow, do):
    """At least 80% of 128 counterfactual images match the exact counterfactual of
    their own unit (same glyph noise, re-rendered under ``do``) better than that of
    any unit with another digit. Measured: 89% / 100% / 100% for do(thickness=4),
    do(thickness=1.5), do(intensity=100); images of other units match 5-7%.

    This checks identity, not the size of the effect: after this short fit the
    tiny flow moves thickness very little, and the factual image itself would score
    91% / 99% / 100%. How far interventions move the measured attributes is reported
    by ``benchmarks/bench_images.py``."""
    model, _, noise = tiny_flow
    truth = morpho_counterfactual(noise, do, size=14)["image"]
    assert glyph_matches(_cf(model, tiny_flow[1], do), truth, noise.glyph.digit) > 0.8


def test_do_intensity_moves_intensity_and_keeps_thickness(tiny_flow):
    """do(intensity) is the intervention whose non-intervened attribute, thickness, is
    a parent and must not move. Measured thickness of the counterfactual image stays
    within 0.75 times the thickness difference between two random units (measured:
    0.40 vs 0.81 px; the standard error of a mean over 128 units is ~0.05 px), and
    the counterfactual at intensity 230 is brighter than at 100 for at least 85% of
    units (measured: 95%)."""
    model, test, _ = tiny_flow
    factual = measure_morpho(test["image"])
    dim = measure_morpho(_cf(model, test, {"intensity": 100.0}))
    bright = measure_morpho(_cf(model, test, {"intensity": 230.0}))
    baseline = (factual["thickness"] - factual["thickness"].roll(1)).abs().mean()
    shift = (dim["thickness"] - factual["thickness"]).abs().mean()
    assert float(shift) < 0.75 * float(baseline)
    up = (bright["intensity"] > dim["intensity"]).to(torch.float64).mean()
    assert float(up) > 0.85
