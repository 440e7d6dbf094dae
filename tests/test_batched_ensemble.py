"""Batched ensembles: weights, exact extraction of members, use wherever an ensemble is.

Data: x ~ N(0, 1), t ~ Bernoulli(sigmoid(x)), y = x + 2 t + N(0, 1) (ATE 2).
"""

from __future__ import annotations

import pytest
import torch

from pyro_causalgen.analysis import Ensemble, ask, fit_ensemble
from pyro_causalgen.analysis.uncertainty import load_model
from pyro_causalgen.errors import CausalModelError
from pyro_causalgen.infer.batched_ensemble import fit_batched, row_weights
from pyro_causalgen.scm import StructuralCausalModel

PARENTS = {"x": [], "t": ["x"], "y": ["x", "t"]}


def rows(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    t = (torch.rand(n, generator=g) < torch.sigmoid(x)).float()
    return {"x": x, "t": t, "y": x + 2 * t + torch.randn(n, generator=g)}


def build(flow="nsf"):
    kinds = {"x": flow, "t": "bernoulli", "y": flow}
    small = {"hidden_features": (8,), "transforms": 1}
    kwargs = {"x": small, "y": small} if flow != "locscale" else {}
    return StructuralCausalModel(PARENTS, mechanism=kinds, mechanism_kwargs=kwargs)


def test_row_weights_by_method():
    g = torch.Generator().manual_seed(0)
    boot = row_weights(50, 4, "bootstrap", 0.1, g)
    assert boot.sum(1).tolist() == [50.0] * 4  # counts of 50 draws with replacement
    assert bool((boot == boot.round()).all()) and bool((boot == 0).any(1).all())
    bayes = row_weights(50, 4, "bayesian_bootstrap", 0.2, g)
    held = bayes == 0
    assert held.sum(1).tolist() == [10] * 4 and bool((held == held[0]).all())
    assert bayes.sum(1) == pytest.approx(torch.full((4,), 50.0))
    cross = row_weights(10, 5, "crossfit", 0.0, g)
    assert (cross == 0).sum(0).tolist() == [1] * 10  # each row left out once
    with pytest.raises(ValueError, match="unknown method"):
        row_weights(10, 2, "jackknife", 0.0, g)


def test_members_are_exact_copies_of_the_batched_model():
    data = rows()
    out = fit_batched(build, data, members=3, epochs=2, lr=1e-2, seed=0)
    assert len(out.members) == 3 and out.weights.shape == (3, 400)
    assert all(type(m) is StructuralCausalModel for m in out.members)
    for k, member in enumerate(out.members):
        held = out.weights[k] == 0
        batch = {v: x[held] for v, x in out.data.items()}
        nll = -member.log_prob_data(batch).mean().item()
        # the batched model scored member k's held-out rows at the restored epoch
        assert nll == pytest.approx(out.member_val_loss[k].item(), rel=1e-5)
    a, b = (m.mechanism("y").group.weights[0] for m in out.members[:2])
    assert not torch.equal(a, b)  # members differ


def test_same_seed_same_fit_and_errors():
    data = rows(100)
    one = fit_batched(build, data, members=2, epochs=1, seed=3)
    two = fit_batched(build, data, members=2, epochs=1, seed=3)
    assert torch.equal(one.weights, two.weights)
    for m, n in zip(one.members, two.members):
        for p, q in zip(m.state_dict().values(), n.state_dict().values()):
            assert torch.equal(p, q)
    with pytest.raises(CausalModelError, match="StructuralCausalModel"):
        fit_batched(lambda: torch.nn.Linear(1, 1), data, members=2)
    with pytest.raises(ValueError, match="at least 2 members"):
        fit_batched(build, data, members=1)


def test_ensemble_answers_with_percentiles_dr_out_of_bag_and_saves(tmp_path):
    data = rows()
    ens = fit_ensemble(
        lambda: build("locscale"), data, members=4, epochs=15, lr=0.1, seed=0
    )
    assert isinstance(ens, Ensemble) and ens.weights.shape == (4, 400)
    q = "E[y | do(t=1)] - E[y | do(t=0)]"
    plug = ask(ens, q, n=200)
    assert "percentiles of 4 bootstrap members" in plug.interval_method
    assert abs(plug.estimate - 2.0) < 0.5 and plug.stderr > 0
    dr = ask(ens, q, method="dr", replicates=4)  # data: the ensemble's own rows
    assert "cross-fitted" in dr.interval_method
    # a row is in all 4 bags with probability 0.632**4 = 0.16: about 336 of 400
    # rows have a member of their own (binomial sd 7)
    assert 300 < dr.doubly_robust.held_out_rows < 370
    assert abs(dr.estimate - 2.0) < 5 * dr.stderr
    new = ask(ens, q, rows(200, seed=1), method="dr", replicates=4)
    assert "cross-fitted" not in new.interval_method  # unseen rows: every member
    path = tmp_path / "ens.pt"
    ens.save(path)
    again = load_model(path)
    assert again.method == "bootstrap" and torch.equal(again.weights, ens.weights)
    torch.manual_seed(0)
    first = ask(ens, q, n=50).estimate
    torch.manual_seed(0)
    assert ask(again, q, n=50).estimate == first
