"""ArviZ export: named dims, coordinates, the query in attrs, and posterior plots."""

import matplotlib

matplotlib.use("Agg")

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pyro_causalgen.export import arviz_major, plot_posterior, to_inference_data  # noqa: E402


def _idata():
    g = torch.Generator().manual_seed(0)
    return to_inference_data(
        {
            "posterior": {"effect": 1.5 + torch.randn(2, 100, generator=g)},
            "predictions": {"y": torch.randn(2, 100, 3, 2, generator=g)},
        },
        dims={"y": ["unit", "world"]},
        coords={"world": ["factual", "counterfactual"]},
        attrs={"query": "E[y | do(x=1)]"},
    )


def test_dims_coords_and_query_are_recorded_on_every_group():
    idata = _idata()
    y = idata["predictions"]["y"]
    assert list(y.dims) == ["chain", "draw", "unit", "world"]
    assert list(y.coords["world"].values) == ["factual", "counterfactual"]
    for group in ("posterior", "predictions"):
        assert idata[group].attrs["query"] == "E[y | do(x=1)]"
    summary = az.summary(idata, kind="stats")
    draws = idata["posterior"]["effect"].values
    assert summary.loc["effect", "mean"] == pytest.approx(draws.mean(), abs=1e-3)


def test_unknown_group_is_named():
    with pytest.raises(ValueError, match="unknown ArviZ group.*'prior_samples'"):
        to_inference_data({"prior_samples": {"x": np.zeros((1, 3))}})


@pytest.mark.skipif(arviz_major() >= 1, reason="checks the ArviZ 0.x axes")
def test_plot_posterior_draws_each_variable_and_the_reference_value():
    import matplotlib.pyplot as plt

    idata = _idata()
    ax = plot_posterior(idata, ["effect"], ref_val=1.5)
    ax = np.ravel(ax)
    assert len(ax) == 1 and ax[0].get_title() == "effect"
    xs = [tuple(line.get_xdata()) for line in ax[0].get_lines()]
    assert (1.5, 1.5) in xs, "the reference line is drawn at ref_val"
    plt.close("all")
    ax = np.ravel(plot_posterior(idata, ["y"], group="predictions"))
    assert len(ax) == 3 * 2  # one panel per (unit, world)
    plt.close("all")
