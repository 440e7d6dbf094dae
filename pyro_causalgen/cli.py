"""The ``causalgen`` command line: ``demo``, ``fit``, ``identify``, ``query``.

Errors in user input (files, graphs, queries) print one line naming the culprit and
exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

EPILOG = """examples:
  causalgen demo --out causalgen-out
  causalgen identify --graph "X -> M; M -> Y; X <-> Y" "P(Y | do(X))"
  causalgen fit --data data.csv --graph "A -> B; B -> C" --out model.pt
  causalgen query model.pt "P(C | do(A=1))"
  causalgen query model.pt "E[C | do(A=1)] - E[C | do(A=0)]"
  causalgen query model.pt "C_{A=1}" --observed rows.csv
"""


class UserError(Exception):
    """Bad input from the command line; printed as one line."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="causalgen",
        description="Causal generative models for Pyro: identify causal queries from "
        "a graph, fit flow mechanisms to data, answer interventional and "
        "counterfactual queries.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser(
        "demo",
        help="the main job on the bundled dataset (< 3 min)",
        description=(__import__("pyro_causalgen.demo").demo.__doc__),
    )
    d.add_argument("--out", default="causalgen-out", help="output folder")
    d.add_argument("--members", type=int, default=5, help="bootstrap members")
    d.add_argument("--epochs", type=int, default=25, help="max epochs per member")

    f = sub.add_parser("fit", help="fit flow mechanisms to a CSV file")
    f.add_argument("--data", required=True, help="CSV with one column per variable")
    f.add_argument("--graph", required=True, help='e.g. "A -> B; B -> C"')
    f.add_argument("--out", required=True, help="where to save the fitted model")
    f.add_argument("--mechanism", default="nsf", choices=["nsf", "maf", "locscale"])
    f.add_argument(
        "--affine",
        action="store_true",
        help="nsf/maf: a conditional affine step before each flow (additive noise)",
    )
    f.add_argument("--epochs", type=int, default=100)
    f.add_argument("--batch-size", type=int, default=256)
    f.add_argument("--lr", type=float, default=3e-3)
    f.add_argument(
        "--members",
        type=int,
        default=1,
        help="K > 1: an ensemble of K members fitted as one batched model; "
        "`query` then reports the interval over the members (default 1)",
    )
    f.add_argument(
        "--resample",
        default="bootstrap",
        choices=["bootstrap", "bayesian_bootstrap", "ensemble", "crossfit"],
        help="how the --members differ: bootstrap rows, Dirichlet row weights, "
        "only their initialisation, or K cross-fitting folds (default bootstrap)",
    )
    f.add_argument(
        "--bayesian",
        action="store_true",
        help="after the fit, a variational posterior over the weights (Bayesian "
        "flows); --members posterior draws are saved (default 100)",
    )
    f.add_argument(
        "--bayes-steps", type=int, default=1000, help="SVI steps (default 1000)"
    )

    i = sub.add_parser("identify", help="is a query identifiable from a graph?")
    i.add_argument("--graph", required=True, help='e.g. "X -> Y; X <-> Y"')
    i.add_argument("query", help='e.g. "P(Y | do(X))" or "P(Y_{X=1}=1 | X=0)"')
    i.add_argument("--latex", action="store_true", help="print the estimand as LaTeX")

    q = sub.add_parser("query", help="answer a query with a fitted model")
    q.add_argument("model", help="a model file written by `causalgen fit`")
    q.add_argument(
        "query",
        help='interventional "P(C | do(A=1))" or "E[C | do(A=1)] - E[C | do(A=0)]", '
        'or counterfactual terms "C_{A=1}" answered for each row of --observed',
    )
    q.add_argument("--samples", type=int, default=20_000)
    q.add_argument("--observed", help="CSV of observed rows (counterfactual queries)")
    q.add_argument(
        "--method",
        default="plugin",
        choices=["plugin", "dr"],
        help="plugin: simulate from the model; dr: doubly robust (AIPW) average "
        "effect of a discrete treatment over the rows of --data, with an "
        "influence-function interval (default plugin)",
    )
    q.add_argument("--data", help="CSV of the rows for --method dr")
    q.add_argument(
        "--level", type=float, default=0.9, help="interval probability (default 0.9)"
    )
    return p


def _read_csv(path: str) -> Any:
    import pandas as pd

    if not os.path.exists(path):
        raise UserError(f"no such file: {path}")
    try:
        return pd.read_csv(path)
    except Exception as err:  # pandas raises many types for malformed files
        raise UserError(f"cannot read {path} as CSV: {err}") from err


def _graph(text: str) -> Any:
    from pyro_causalgen.graph import ADMG

    try:
        return ADMG.from_string(text)
    except Exception as err:
        raise UserError(f"bad graph {text!r}: {err}") from err


def cmd_demo(args: argparse.Namespace) -> None:
    from pyro_causalgen.demo import format_rows, run_demo

    rows = run_demo(
        args.out,
        members=args.members,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
    )
    print(format_rows(rows))
    for r in rows:
        if not r.identifiable:
            print(f"\nwitness: {r.estimand}")
    print(
        f"\nwrote densities.png, effects.png, counterfactuals.png and "
        f"inference_data.nc to {os.path.abspath(args.out)}"
    )


def cmd_identify(args: argparse.Namespace) -> None:
    from pyro_causalgen.identify import identify

    graph = _graph(args.graph)
    try:
        result = identify(graph, args.query)
    except Exception as err:
        raise UserError(f"bad query {args.query!r}: {err}") from err
    if result.identifiable:
        est = result.estimand
        print(
            f"identifiable ({result.algorithm}): "
            f"{est.to_latex() if args.latex else est.to_text()}"
        )
    else:
        print(f"not identifiable: {result.explanation}")


def cmd_fit(args: argparse.Namespace) -> None:
    import torch

    from pyro_causalgen.infer import fit
    from pyro_causalgen.io import save
    from pyro_causalgen.scm import StructuralCausalModel

    graph = _graph(args.graph)
    if graph.bidirected_edges:
        edges = ", ".join(f"{a} <-> {b}" for a, b in graph.bidirected_edges)
        raise UserError(
            f"the graph has latent confounding ({edges}): `causalgen fit` fits fully "
            "observed DAGs; model the confounder as a latent site in a Pyro program "
            "and use the Python API"
        )
    frame = _read_csv(args.data)
    missing = [v for v in graph.nodes if v not in frame.columns]
    if missing:
        raise UserError(
            f"{args.data} has no column(s) {missing} for the graph's "
            f"variables; its columns are {list(frame.columns)}"
        )
    parents = {v: sorted(graph.parents(v)) for v in graph.nodes}
    torch.manual_seed(args.seed)
    if args.affine and args.mechanism == "locscale":
        raise UserError("--affine applies to flow mechanisms (nsf, maf)")
    kwargs = {"affine": True} if args.affine else None

    def build() -> StructuralCausalModel:
        return StructuralCausalModel(
            parents, mechanism=args.mechanism, mechanism_kwargs=kwargs
        ).to(args.device)

    if args.members > 1 and not args.bayesian:
        return _fit_members(build, frame[list(graph.nodes)], args)
    scm = build()
    history = fit(
        scm,
        frame[list(graph.nodes)],
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        disable_progbar=False,
    )
    if args.bayesian:
        return _fit_bayesian(scm, frame[list(graph.nodes)], args)
    save(scm, args.out)
    print(
        f"fitted {len(parents)} mechanisms ({args.mechanism}) in "
        f"{len(history.train_loss)} epochs, validation NLL "
        f"{history.best_val_loss:.4f}; saved to {args.out}"
    )


def _fit_members(build: Any, frame: Any, args: argparse.Namespace) -> None:
    """``fit --members K``: one batched fit of K members, saved as an ensemble."""
    from pyro_causalgen.analysis.uncertainty import fit_ensemble

    ens = fit_ensemble(
        build,
        frame,
        members=args.members,
        method=args.resample,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        disable_progbar=False,
    )
    ens.save(args.out)
    history = ens.histories[0]
    print(
        f"fitted {args.members} {args.resample} members ({args.mechanism}) in one "
        f"batched model, {len(history.train_loss)} epochs, mean validation NLL "
        f"{history.best_val_loss:.4f}; saved to {args.out}"
    )


def _fit_bayesian(scm: Any, frame: Any, args: argparse.Namespace) -> None:
    """``fit --bayesian``: SVI posterior over the weights; posterior draws saved."""
    import copy

    import torch

    from pyro_causalgen.analysis.bayesian import fit_bayesian
    from pyro_causalgen.analysis.uncertainty import Ensemble

    bayes, losses = fit_bayesian(
        scm, frame, steps=args.bayes_steps, seed=args.seed, disable_progbar=False
    )
    draws = args.members if args.members > 1 else 100
    members = []
    for frozen in bayes.posterior_models(draws):
        member = copy.deepcopy(scm)
        with torch.no_grad():
            named = dict(member.named_parameters())
            for name, value in frozen.params.items():
                named[name].copy_(value)
        members.append(member)
    Ensemble(members, "bayesian").save(args.out)
    print(
        f"fitted a posterior over the weights of {len(scm.order)} mechanisms "
        f"({args.bayes_steps} SVI steps, final ELBO per row {losses[-1]:.4f}); "
        f"saved {draws} posterior draws to {args.out}"
    )


def cmd_query(args: argparse.Namespace) -> None:
    import warnings

    import torch

    from pyro_causalgen.analysis.query import ask, parse_question
    from pyro_causalgen.analysis.uncertainty import load_model

    if not os.path.exists(args.model):
        raise UserError(f"no such model file: {args.model}")
    try:
        model = load_model(args.model, map_location=args.device)
    except Exception as err:
        raise UserError(f"cannot load {args.model}: {err}") from err
    questions, per_row = _questions(args.query.strip())
    if per_row and not args.observed:
        raise UserError("counterfactual queries need --observed rows.csv")
    if args.method == "dr":
        if per_row or not args.data:
            raise UserError(
                "--method dr answers average effects E[...] over the rows of "
                "--data rows.csv"
            )
        return _query_dr(model, questions, args)
    rows = _model_rows(model, args.observed) if args.observed else None
    torch.manual_seed(args.seed)
    for question in questions:
        with warnings.catch_warnings():  # the verdict is printed below instead
            warnings.simplefilter("ignore")
            answer = ask(model, question, rows, n=args.samples, prob=args.level)
        if answer.units is None:  # an ensemble: no single model's units
            print(f"{question}: {answer.describe()}")
        elif rows is None:
            v = answer.units.double()
            q05, q50, q95 = torch.quantile(
                v, torch.tensor([0.05, 0.5, 0.95], dtype=v.dtype)
            ).tolist()
            print(f"{question}: {answer.describe()}")
            print(
                f"  spread over {len(v)} simulated units (not an interval for the "
                f"mean): median {q50:.4f}, 90% of units in [{q05:.4f}, {q95:.4f}]"
            )
        else:
            terms = parse_question(question)
            factual = rows[terms[0].outcome] if len(terms) == 1 else None
            print(
                f"{question}, row by row"
                + (": factual -> counterfactual" if factual is not None else "")
            )
            for i, value in zip(answer.rows.tolist(), answer.units.tolist()):
                before = "" if factual is None else f"{float(factual[i]):.4f} -> "
                print(f"  row {i}: {before}{value:.4f}")
            print(f"  mean over {len(answer.units)} rows: {answer.estimate:.4f}")
        if answer.identifiable:
            print(f"  identifiable: {answer.estimand}")
        else:
            print(
                "  not identifiable from the graph, so the answer rests on the "
                f"fitted mechanisms: {answer.explanation}"
            )


def _query_dr(model: Any, questions: list[str], args: argparse.Namespace) -> None:
    """``causalgen query --method dr``: the AIPW answer over the rows of --data."""
    from pyro_causalgen.analysis.query import ask

    rows = _model_rows(model, args.data)
    for question in questions:
        answer = ask(
            model, question, rows, n=args.samples, prob=args.level, method="dr"
        )
        print(f"{question}: {answer.describe()}")
        state = "identifiable" if answer.identifiable else "not identifiable"
        print(f"  {state}: {answer.estimand or answer.explanation}")


def _model_rows(model: Any, path: str) -> dict[str, Any]:
    """The columns of CSV ``path`` for the variables of a model or ensemble."""
    members = getattr(model, "members", None)
    names = list((members[0] if members else model).variables)
    frame = _read_csv(path)
    missing = [v for v in names if v not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {missing}")
    return {v: frame[v].to_numpy() for v in names}


def _questions(text: str) -> tuple[list[str], bool]:
    """The questions for :func:`~pyro_causalgen.analysis.query.ask` in a CLI query.

    ``E[...]`` is asked as is; ``P(...)`` once per outcome (counterfactual events
    as ``E[event | evidence]``); bare counterfactual terms ``"C_{A=1}, B_{A=1}"`` as
    ``E[term]`` under the union of the subscripts. Returns the questions and whether
    they must be answered row by row (counterfactual ``P(...)`` and bare terms).
    """
    import re

    from pyro_causalgen.identify import CausalQuery, parse_query

    if text.startswith("E["):
        return [text], False
    if text.startswith("P("):
        try:
            query = parse_query(text)
        except Exception as err:
            raise UserError(f"bad query {text!r}: {err}") from err
        if isinstance(query, CausalQuery):
            values = query.values
            given = {t: values.get(t) for t in query.treatments}
            conditions = {c: values.get(c) for c in query.conditions}
            return [
                str(CausalQuery({y: values.get(y)}, given, conditions))
                for y in query.outcomes
            ], False
        evidence = ", ".join(map(str, query.evidence))  # type: ignore[attr-defined]
        given = f" | {evidence}" if evidence else ""
        events = query.events  # type: ignore[attr-defined]
        return [f"E[{e.variable}{given}]" for e in events], True
    terms = re.findall(r"([A-Za-z_][\w.]*?)_\{([^}]*)\}", text)
    if not terms or re.sub(r"[A-Za-z_][\w.]*?_\{[^}]*\}|[,\s]", "", text):
        raise UserError(
            f"bad query {text!r}: write P(...), E[...] or counterfactual terms "
            "like C_{A=1}"
        )
    interventions: dict[str, str] = {}
    for _, subscript in terms:
        for part in subscript.split(","):
            name, _, value = part.partition("=")
            try:
                float(value)
            except ValueError:
                raise UserError(
                    f"bad query {text!r}: intervention {part.strip()!r} needs a "
                    "number, e.g. A=1"
                ) from None
            interventions[name.strip()] = value.strip()
    sub = ", ".join(f"{k}={v}" for k, v in interventions.items())
    names = dict.fromkeys(name for name, _ in terms)
    return [f"E[{name}_{{{sub}}}]" for name in names], True


COMMANDS = {
    "demo": cmd_demo,
    "fit": cmd_fit,
    "identify": cmd_identify,
    "query": cmd_query,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``causalgen`` and ``python -m pyro_causalgen``."""
    args = _parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (UserError, ValueError, KeyError, RuntimeError, OSError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"causalgen {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0
