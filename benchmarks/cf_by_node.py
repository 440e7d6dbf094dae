"""Per-node counterfactual RMSE of ours and causalflows on one SCM of the suite.

Fits both contenders as ``bench_causal_nf_suite.py`` does (reduced protocol, one
seed) and prints, for each of the paper's intervention targets at its median, the
RMSE of every node's counterfactual against the exact one: where a CF gap comes from.

Usage: ``python benchmarks/cf_by_node.py large-backdoor/non-linear [--seed 0]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_causal_nf_suite as suite  # noqa: E402

from pyro_causalgen.datasets.causal_nf import load_scm  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scm", help="name/variant, e.g. simpson/non-linear")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ours", default="nsf-small-wd", choices=sorted(suite.OURS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    proto = suite.PROTOCOLS["reduced"]
    truth = load_scm(*args.scm.split("/"))
    n_train, n_val, n_test = proto.sizes
    gen = torch.Generator().manual_seed(10_000 + args.seed)
    pool = truth.sample(n_train + n_val, generator=gen)
    test = truth.sample(n_test, generator=gen)
    print(f"{args.scm}: per-node CF RMSE ({', '.join(truth.variables)})")
    for label in (args.ours, suite.CAUSALFLOWS):
        pyro.set_rng_seed(args.seed)
        if label == suite.CAUSALFLOWS:
            model: suite.Ours | suite.Peer = suite.Peer(truth, (64, 64))
        else:
            model = suite.Ours(truth, label)
        model.fit(pool, proto, args.seed)
        for v in truth.intervention_targets:
            a = truth.intervention_values(v, pool, (50,)).tolist()[0]
            true = truth.counterfactual(test, {v: a})
            est = model.counterfactual(test, {v: a})
            if isinstance(est, dict):
                est = truth.from_dict({k: t.double() for k, t in est.items()})
            err = (est.double() - true).square().mean(0).sqrt()
            print(f"{label:>12} do({v}=median): " + " ".join(f"{e:.3f}" for e in err))


if __name__ == "__main__":
    main()
