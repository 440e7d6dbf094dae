"""save / load: a fitted model round-trips exactly."""

from __future__ import annotations

import pytest
import torch

from pyro_causalgen import StructuralCausalModel, fit, load, save
from pyro_causalgen.errors import CausalModelError
from pyro_causalgen.mechanisms import FlowMechanism


@pytest.mark.parametrize("mechanism", ["nsf", "maf", "locscale"])
def test_fitted_model_round_trips_exactly(tmp_path, mechanism):
    scm = StructuralCausalModel(
        {"a": [], "b": ["a"], "c": ["a", "b"]},
        shapes={"b": (2,)},
        mechanism=mechanism,
        mechanism_kwargs={"hidden_features": (8,)},
    )
    a = 3 + torch.randn(200)
    data = {"a": a, "b": torch.stack([a, a**2], -1), "c": a - 1}
    fit(scm, data, epochs=2, seed=0)
    path = tmp_path / "model.pt"
    save(scm, path)
    loaded = load(path)
    assert type(loaded) is type(scm) and loaded.config == scm.config
    for key, value in scm.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    # standardisation was fitted (not the defaults) and survived
    assert loaded.mechanism("a").value_loc.item() == pytest.approx(
        a[:180].mean(), abs=1
    )
    x = {k: v[:10] for k, v in data.items()}
    assert torch.equal(scm.log_prob_data(x), loaded.log_prob_data(x))


def test_single_mechanism_round_trip_and_map_location(tmp_path, device):
    mech = FlowMechanism(parents={"p": (3,)}, event_shape=(2,), name="y", bins=5)
    save(mech, tmp_path / "m.pt")
    loaded = load(tmp_path / "m.pt", map_location=device)
    assert loaded.config == mech.config
    assert loaded.value_loc.device.type == device.type


def test_unsaveable_objects_and_foreign_files_raise(tmp_path):
    with pytest.raises(CausalModelError, match="has no `config`"):
        save(torch.nn.Linear(2, 2), tmp_path / "x.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CausalModelError, match="not a pyro_causalgen model file"):
        load(tmp_path / "foreign.pt")
