"""The causalgen command line: every command, and one-line errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from pyro_causalgen.cli import main
from pyro_causalgen.demo import format_rows, run_demo


def test_identify_prints_estimand_or_witness(capsys):
    assert main(["identify", "--graph", "X -> M; M -> Y; X <-> Y", "P(Y | do(X))"]) == 0
    assert "identifiable" in capsys.readouterr().out
    assert main(["identify", "--graph", "X -> Y; X <-> Y", "P(Y | do(X))"]) == 0
    assert "not identifiable" in capsys.readouterr().out


def test_fit_then_query(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, generator=g)
    b = 2 * a + 0.1 * torch.randn(400, generator=g)
    pd.DataFrame({"A": a, "B": b}).to_csv(tmp_path / "d.csv", index=False)
    model = str(tmp_path / "m.pt")
    args = ["fit", "--data", str(tmp_path / "d.csv"), "--graph", "A -> B"]
    assert (
        main(
            [
                *args,
                "--out",
                model,
                "--mechanism",
                "locscale",
                "--epochs",
                "60",
                "--lr",
                "0.05",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["query", model, "P(B | do(A=1))", "--samples", "4000"]) == 0
    out = capsys.readouterr().out
    mean = float(out.split("do(A=1)): ")[1].split(";")[0])
    assert abs(mean - 2.0) < 0.2
    # a single fitted model: no statistical interval, the simulation error labelled
    assert "no statistical interval" in out and "Monte Carlo s.e." in out
    assert "(s.e." not in out and "not an interval for the mean" in out
    assert "identifiable: P(B | do(A=1)) = P(B | A=1)" in out
    # an effect: both arms share their noise, so a fitted linear slope comes out
    assert main(["query", model, "E[B | do(A=1)] - E[B | do(A=0)]"]) == 0
    out = capsys.readouterr().out
    assert abs(float(out.split("do(A=0)]: ")[1].split(";")[0]) - 2.0) < 0.2
    assert float(out.split("Monte Carlo s.e. ")[1].split()[0]) < 1e-6
    for query, message in [
        ("P(B | do(A))", "treatment 'A' has no value"),
        ("P(W | do(A=1))", "'W', which is not a site of the model"),
        ("B_{A=1}", "need --observed"),
    ]:
        assert main(["query", model, query]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    pd.DataFrame({"A": [0.0, 1.0], "B": [0.1, 2.0]}).to_csv(
        tmp_path / "o.csv", index=False
    )
    assert (
        main(
            [
                "query",
                model,
                "B_{A=1}",
                "--observed",
                str(tmp_path / "o.csv"),
            ]
        )
        == 0
    )
    rows = capsys.readouterr().out
    assert "row 0: 0.1000 ->" in rows and "row 1: 2.0000 ->" in rows
    # B = 2A + noise: the unit's own noise carries over, so B_{A=1} = B + 2 (1 - A)
    cf0 = float(rows.split("row 0: 0.1000 -> ")[1].split()[0])
    cf1 = float(rows.split("row 1: 2.0000 -> ")[1].split()[0])
    assert abs(cf0 - 2.1) < 0.2 and abs(cf1 - 2.0) < 0.05


@pytest.mark.parametrize(
    "argv,message",
    [
        (["identify", "--graph", "X -> Y; Y -> X", "P(Y | do(X))"], "cycle"),
        (["identify", "--graph", "X -> Y", "P(Y | do(Q))"], "Q"),
        (["identify", "--graph", "X -> Y", "P(Y | do(X"], "bad query"),
        (["query", "missing.pt", "P(Y | do(X=1))"], "no such model file"),
        (
            ["fit", "--data", "missing.csv", "--graph", "A -> B", "--out", "m.pt"],
            "no such file",
        ),
        (
            ["fit", "--data", "{csv}", "--graph", "A -> C", "--out", "m.pt"],
            "no column(s) ['C']",
        ),
        (
            ["fit", "--data", "{csv}", "--graph", "A -> B; A <-> B", "--out", "m.pt"],
            "latent confounding",
        ),
        (
            ["fit", "--data", "{csv}", "--graph", "A -> B", "--out", "m.pt"]
            + ["--mechanism", "locscale", "--affine"],
            "--affine applies to flow mechanisms",
        ),
    ],
)
def test_bad_input_gives_one_line_and_status_2(argv, message, tmp_path, capsys):
    pd.DataFrame({"A": [0.0, 1.0], "B": [1.0, 2.0]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    argv = [a.replace("{csv}", str(tmp_path / "d.csv")) for a in argv]
    os.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_fit_with_an_affine_step_saves_it(tmp_path, capsys):
    from pyro_causalgen import load

    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, generator=g)
    frame = pd.DataFrame({"A": a, "B": a**2 + 0.3 * torch.randn(300, generator=g)})
    frame.to_csv(tmp_path / "d.csv", index=False)
    argv = ["fit", "--data", str(tmp_path / "d.csv"), "--graph", "A -> B"]
    argv += ["--out", str(tmp_path / "m.pt"), "--affine", "--epochs", "2"]
    assert main(argv) == 0
    model = load(tmp_path / "m.pt")
    assert model.mechanism("B").config["affine"] is True


def test_module_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "pyro_causalgen", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "demo" in out and "identify" in out and "examples:" in out


def test_demo_runs_and_writes_its_files(tmp_path):
    rows = run_demo(
        str(tmp_path), members=2, epochs=1, samples=500, units=20, disable_progbar=True
    )
    assert [r.identifiable for r in rows] == [True, True, True, False]
    assert "not identifiable" in format_rows(rows)
    for name in (
        "densities.png",
        "effects.png",
        "counterfactuals.png",
        "inference_data.nc",
    ):
        assert (tmp_path / name).stat().st_size > 0


def test_fit_members_then_query_reports_the_labelled_interval(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, generator=g)
    b = 2 * a + 0.5 * torch.randn(300, generator=g)
    pd.DataFrame({"A": a, "B": b}).to_csv(tmp_path / "d.csv", index=False)
    model = str(tmp_path / "m.pt")
    fit = ["fit", "--data", str(tmp_path / "d.csv"), "--graph", "A -> B"]
    opts = ["--mechanism", "locscale", "--epochs", "15", "--lr", "0.1"]
    assert main([*fit, "--out", model, *opts, "--members", "3"]) == 0
    assert "3 bootstrap members" in capsys.readouterr().out
    assert main(["query", model, "E[B | do(A=1)] - E[B | do(A=0)]"]) == 0
    out = capsys.readouterr().out
    assert "90% interval, percentiles of 3 bootstrap members: [" in out
    assert "Monte Carlo s.e." in out and "(s.e." not in out
    lo, hi = (float(v) for v in out.split(": [")[1].split("]")[0].split(","))
    assert lo <= hi and abs((lo + hi) / 2 - 2.0) < 0.3
    # A is continuous here: the doubly robust answer needs a discrete treatment
    argv = ["query", model, "E[B | do(A=1)]", "--method", "dr"]
    assert main([*argv, "--data", str(tmp_path / "d.csv")]) == 2
    assert "discrete treatment mechanism at 'A'" in capsys.readouterr().err
    assert main(argv) == 2
    assert "--data rows.csv" in capsys.readouterr().err


def test_fit_bayesian_saves_posterior_draws_that_query_labels(tmp_path, capsys):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200, generator=g)
    pd.DataFrame({"A": a, "B": 2 * a + 0.5 * torch.randn(200, generator=g)}).to_csv(
        tmp_path / "d.csv", index=False
    )
    model = str(tmp_path / "b.pt")
    argv = ["fit", "--data", str(tmp_path / "d.csv"), "--graph", "A -> B"]
    opts = ["--mechanism", "locscale", "--epochs", "20", "--lr", "0.1"]
    bayes = ["--bayesian", "--bayes-steps", "30", "--members", "5"]
    assert main([*argv, "--out", model, *opts, *bayes]) == 0
    assert "saved 5 posterior draws" in capsys.readouterr().out
    assert main(["query", model, "E[B | do(A=1)] - E[B | do(A=0)]"]) == 0
    assert "percentiles of 5 posterior draws: [" in capsys.readouterr().out
