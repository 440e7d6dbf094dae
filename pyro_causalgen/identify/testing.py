"""Testing helpers: random discrete SCMs with exact observational, interventional
and counterfactual probabilities, to check estimands numerically.

Every bidirected edge of the graph becomes an explicit hidden confounder; every
variable ``v`` is ``f_v(pa(v), confounders(v), ε_v)`` with a random table ``f_v``
that is onto for each context (so every value has positive probability) and
random Dirichlet exogenous distributions.  All probabilities are computed exactly
by enumerating the exogenous configurations (float64).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pyro_causalgen.graph.admg import ADMG


class DiscreteSCM:
    """A random discrete SCM consistent with ``graph``.

    :param graph: the ADMG (each bidirected edge becomes a hidden confounder).
    :param seed: seed of the random tables (the library never seeds globally).
    :param card: number of values of every observed variable (values ``0..card-1``).
    :param confounder_card: number of values of each hidden confounder.

    >>> scm = DiscreteSCM(ADMG.from_string("X -> Y; X <-> Y"), seed=0)
    >>> round(float(scm.joint()["weight"].sum()), 12)
    1.0
    """

    def __init__(
        self, graph: ADMG | str, seed: int = 0, card: int = 2, confounder_card: int = 2
    ) -> None:
        self.graph = ADMG.coerce(graph)
        rng = np.random.default_rng(seed)
        self.card = card
        g = self.graph
        self.order = g.topological_order()
        self.confounders = [tuple(e) for e in g.bidirected_edges]
        noise_card = card + 1
        # exogenous variables: one confounder per bidirected edge, one noise per node
        cards = [confounder_card] * len(self.confounders) + [noise_card] * len(
            self.order
        )
        probs = [rng.dirichlet(np.ones(c)) for c in cards]
        grids = np.meshgrid(*[np.arange(c) for c in cards], indexing="ij")
        self._exo = [a.reshape(-1) for a in grids]
        w = np.ones(self._exo[0].shape if self._exo else (1,), dtype=np.float64)
        for a, p in zip(self._exo, probs):
            w = w * p[a]
        self.weights = w
        self._conf_of: dict[str, list[int]] = {v: [] for v in self.order}
        for k, (a, b) in enumerate(self.confounders):
            self._conf_of[a].append(k)
            self._conf_of[b].append(k)
        self._parents = {
            v: sorted(g.parents(v), key=self.order.index) for v in self.order
        }
        self._tables: dict[str, np.ndarray] = {}
        for v in self.order:
            ctx = [card] * len(self._parents[v]) + [confounder_card] * len(
                self._conf_of[v]
            )
            n_ctx = int(np.prod(ctx)) if ctx else 1
            table = np.empty((n_ctx, noise_card), dtype=np.int64)
            for c in range(n_ctx):
                extra = rng.integers(0, card, size=noise_card - card)
                table[c] = rng.permutation(np.concatenate([np.arange(card), extra]))
            self._tables[v] = table.reshape(*ctx, noise_card)

    def solve(
        self, interventions: Mapping[str, int] | None = None
    ) -> dict[str, np.ndarray]:
        """Values of every variable for every exogenous configuration.

        :param interventions: hard interventions ``{name: value}``.
        :returns: ``{name: int array}`` aligned with :attr:`weights`.

        >>> scm = DiscreteSCM("X -> Y", seed=1)
        >>> bool((scm.solve({"X": 1})["X"] == 1).all())
        True
        """
        interventions = dict(interventions or {})
        n_conf = len(self.confounders)
        vals: dict[str, np.ndarray] = {}
        size = self.weights.shape[0]
        for k, v in enumerate(self.order):
            if v in interventions:
                vals[v] = np.full(size, int(interventions[v]), dtype=np.int64)
                continue
            idx = [vals[p] for p in self._parents[v]]
            idx += [self._exo[c] for c in self._conf_of[v]]
            idx.append(self._exo[n_conf + k])
            vals[v] = self._tables[v][tuple(idx)]
        return vals

    def joint(self) -> pd.DataFrame:
        """The exact observational joint as weighted rows (column ``weight``).

        >>> DiscreteSCM("X -> Y", seed=0).joint().columns.tolist()
        ['X', 'Y', 'weight']
        """
        vals = self.solve()
        names = list(self.graph.nodes)
        shape = [self.card] * len(names)
        flat = np.ravel_multi_index([vals[v] for v in names], shape)
        p = np.bincount(flat, weights=self.weights, minlength=int(np.prod(shape)))
        rows = list(itertools.product(range(self.card), repeat=len(names)))
        frame = pd.DataFrame(rows, columns=names)
        frame["weight"] = p
        return frame

    def interventional(
        self,
        outcomes: Sequence[str],
        treatments: Sequence[str] = (),
        conditions: Sequence[str] = (),
    ) -> pd.DataFrame:
        """Exact ``P(outcomes | do(treatments), conditions)`` for all values.

        Rows where the condition has probability zero get ``NaN``.

        >>> t = DiscreteSCM("X -> Y", seed=0).interventional(["Y"], ["X"])
        >>> t.columns.tolist()
        ['Y', 'X', 'probability']
        """
        rows = []
        k = self.card
        for xs in itertools.product(range(k), repeat=len(treatments)):
            vals = self.solve(dict(zip(treatments, xs)))
            for ys in itertools.product(range(k), repeat=len(outcomes)):
                for zs in itertools.product(range(k), repeat=len(conditions)):
                    cz = np.ones_like(self.weights, dtype=bool)
                    for v, z in zip(conditions, zs):
                        cz &= vals[v] == z
                    cy = cz.copy()
                    for v, y in zip(outcomes, ys):
                        cy &= vals[v] == y
                    den = self.weights[cz].sum()
                    p = self.weights[cy].sum() / den if den > 0 else np.nan
                    rows.append((*ys, *xs, *zs, p))
        cols = list(outcomes) + list(treatments) + list(conditions) + ["probability"]
        return pd.DataFrame(rows, columns=cols)

    def counterfactual(
        self,
        events: Iterable[tuple[str, Mapping[str, Any], Any]],
        evidence: Iterable[tuple[str, Mapping[str, Any], Any]] = (),
    ) -> float:
        """Exact ``P(events | evidence)``; each event is ``(name, do, value)``.

        All worlds share the exogenous configuration (the twin-network semantics).

        >>> scm = DiscreteSCM("X -> Y", seed=0)
        >>> p = scm.counterfactual([("Y", {"X": 1}, 1), ("Y", {"X": 1}, 0)])
        >>> p
        0.0
        """
        cache: dict[tuple, dict[str, np.ndarray]] = {}

        def holds(items) -> np.ndarray:
            ok = np.ones_like(self.weights, dtype=bool)
            for name, do, value in items:
                key = tuple(sorted(dict(do).items()))
                if key not in cache:
                    cache[key] = self.solve(dict(key))
                ok &= cache[key][name] == value
            return ok

        events, evidence = list(events), list(evidence)
        both = holds(events + evidence)
        num = float(self.weights[both].sum())
        if not evidence:
            return num
        den = float(self.weights[holds(evidence)].sum())
        return num / den if den > 0 else float("nan")


__all__ = ["DiscreteSCM"]
