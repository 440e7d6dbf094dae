"""Evaluate estimands on discrete data with funsor.

Each :class:`~pyro_causalgen.identify.estimand.Probability` term becomes a
:class:`funsor.tensor.Tensor` whose named inputs are the term's symbols (one
``Bint`` input per symbol, sized by the variable's number of values); products,
sums and ratios are funsor operations, so variables are matched by name, never
by position.  Arithmetic is float64.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd
import torch

from pyro_causalgen.errors import DataError
from pyro_causalgen.identify.errors import PositivityError
from pyro_causalgen.identify.estimand import (
    Constant,
    Estimand,
    Expression,
    Fraction,
    Probability,
    Product,
    Sum,
)
from pyro_causalgen.identify.query import Symbol, _fmt_value


def _funsor():
    import funsor

    if funsor.get_backend() != "torch":
        funsor.set_backend("torch")
    return funsor


def _variables(e: Expression, out: set[str]) -> None:
    if isinstance(e, Probability):
        out.update(k for k, _ in e.outcomes + e.given)
    elif isinstance(e, Product):
        for f in e.factors:
            _variables(f, out)
    elif isinstance(e, Sum):
        _variables(e.expression, out)
    elif isinstance(e, Fraction):
        _variables(e.numerator, out)
        _variables(e.denominator, out)


def _sorted_values(values: Any) -> list:
    vals = list(pd.unique(values))
    try:
        return sorted(vals)
    except TypeError:
        return vals


class _Table:
    """Weighted observations with per-variable value lists."""

    def __init__(self, data: pd.DataFrame, variables: set[str], weight: str) -> None:
        if not isinstance(data, pd.DataFrame):
            raise DataError(
                f"data must be a pandas DataFrame, got {type(data).__name__}"
            )
        missing = sorted(v for v in variables if v not in data.columns)
        if missing:
            raise DataError(
                f"data has no column for {', '.join(map(repr, missing))}; "
                f"columns are {list(map(str, data.columns))}"
            )
        if weight in data.columns:
            w = pd.to_numeric(data[weight], errors="coerce").to_numpy(dtype=np.float64)
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise DataError(f"column {weight!r} must hold finite weights >= 0")
        else:
            w = np.ones(len(data), dtype=np.float64)
        cols = sorted(variables)
        for c in cols:
            if data[c].isna().any():
                raise DataError(f"column {c!r} has missing values")
        total = w.sum()
        if total <= 0:
            raise DataError("data carry no weight (no rows, or all weights zero)")
        self.domains = {c: _sorted_values(data[c]) for c in cols}
        self.codes = {
            c: pd.Categorical(data[c], categories=self.domains[c]).codes.astype(
                np.int64
            )
            for c in cols
        }
        self.w = w / total
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    def marginal(self, names: tuple[str, ...]) -> np.ndarray:
        """``P(names)`` as an array with one axis per name (in the given order)."""
        key = tuple(sorted(names))
        if key not in self._cache:
            shape = tuple(len(self.domains[n]) for n in key)
            if not key:
                arr = np.array(self.w.sum())
            else:
                flat = np.ravel_multi_index([self.codes[n] for n in key], shape)
                arr = np.bincount(flat, weights=self.w, minlength=int(np.prod(shape)))
                arr = arr.reshape(shape)
            self._cache[key] = arr
        arr = self._cache[key]
        perm = [key.index(n) for n in names]
        return np.transpose(arr, perm) if perm else arr

    def index(self, var: str, value: Any) -> int | None:
        try:
            return self.domains[var].index(value)
        except ValueError:
            return None


class _Evaluator:
    def __init__(self, table: _Table) -> None:
        self.t = table
        self.funsor = _funsor()
        self.names: dict[Symbol, str] = {}

    def input_name(self, s: Symbol) -> str:
        if s not in self.names:
            self.names[s] = f"v{len(self.names)}"
        return self.names[s]

    def tensor(self, arr: np.ndarray, syms: list[Symbol]):
        funsor = self.funsor
        from funsor.domains import Bint

        inputs = OrderedDict(
            (self.input_name(s), Bint[len(self.t.domains[s.variable])]) for s in syms
        )
        return funsor.Tensor(torch.as_tensor(np.ascontiguousarray(arr)), inputs)

    def select(self, pairs, arr: np.ndarray, term: Probability):
        """Index constant axes, diagonalise repeated symbols; return (arr, syms)."""
        index: list[Any] = []
        syms: list[Symbol] = []
        for var, value in pairs:
            if isinstance(value, Symbol):
                index.append(slice(None))
                syms.append(value)
            else:
                k = self.t.index(var, value)
                if k is None:
                    return None, None
                index.append(k)
        return arr[tuple(index)], syms

    def prob(self, term: Probability):
        names = tuple(k for k, _ in term.outcomes + term.given)
        joint = self.t.marginal(names)
        sel, syms = self.select(term.outcomes + term.given, joint, term)
        if sel is None:
            # an outcome or condition value never observed
            given_vals = [v for _, v in term.given if not isinstance(v, Symbol)]
            for var, value in term.given:
                if not isinstance(value, Symbol) and self.t.index(var, value) is None:
                    raise PositivityError(
                        f"{term} conditions on {var}={_fmt_value(value)}, a value the "
                        "data never show (probability 0)"
                    )
            del given_vals
            return self.funsor.Tensor(torch.tensor(0.0, dtype=torch.float64))
        if term.given:
            gnames = tuple(k for k, _ in term.given)
            gmarg = self.t.marginal(gnames)
            gsel, gsyms = self.select(term.given, gmarg, term)
            gsel = np.asarray(gsel)
            if np.any(gsel <= 0):
                bad = np.argwhere(gsel <= 0)[0] if gsel.ndim else ()
                conf = dict(
                    (s.variable, self.t.domains[s.variable][int(i)])
                    for s, i in zip(gsyms, bad)
                )
                conf.update((k, v) for k, v in term.given if not isinstance(v, Symbol))
                shown = ", ".join(f"{k}={_fmt_value(v)}" for k, v in conf.items())
                raise PositivityError(
                    f"positivity violation: {term} needs P({shown}) > 0, but the data "
                    "give it probability 0"
                )
            # broadcast the marginal onto the joint's symbol axes
            joint_t = self.tensor(np.asarray(sel, dtype=np.float64), syms)
            marg_t = self.tensor(gsel.astype(np.float64), gsyms)
            return joint_t / marg_t
        return self.tensor(np.asarray(sel, dtype=np.float64), syms)

    def eval(self, e: Expression):
        funsor = self.funsor
        if isinstance(e, Probability):
            return self.prob(e)
        if isinstance(e, Constant):
            return funsor.Tensor(torch.tensor(float(e.value), dtype=torch.float64))
        if isinstance(e, Product):
            out = funsor.Tensor(torch.tensor(1.0, dtype=torch.float64))
            for f in e.factors:
                out = out * self.eval(f)
            return out
        if isinstance(e, Sum):
            body = self.eval(e.expression)
            names = frozenset(self.input_name(s) for s in e.over) & frozenset(
                body.inputs
            )
            return body.reduce(funsor.ops.add, names) if names else body
        if isinstance(e, Fraction):
            num = self.eval(e.numerator)
            den = self.eval(e.denominator)
            if bool((den.data <= 0).any()):
                raise PositivityError(
                    f"positivity violation: the denominator {e.denominator} is 0 for "
                    "some values; the conditional is undefined there"
                )
            return num / den
        raise TypeError(f"cannot evaluate {type(e).__name__}")


def evaluate(
    expression: Expression,
    data: pd.DataFrame,
    outputs: list[tuple[str, Symbol]] | tuple = (),
    weight: str = "weight",
) -> pd.DataFrame:
    """Evaluate an expression on discrete data.

    :param expression: the estimand expression.
    :param data: a DataFrame with one column per variable and an optional
        ``weight`` column (rows are weighted; weights need not sum to one).
    :param outputs: ``(column, symbol)`` pairs, one per free symbol; the result
        has one row per combination of their observed values.
    :param weight: the name of the weight column.
    :returns: a DataFrame with the output columns and ``probability``.
    :raises DataError: for a missing column, missing values or bad weights.
    :raises PositivityError: if a conditional needs an event of probability 0.

    >>> import pandas as pd
    >>> from pyro_causalgen.identify.query import Symbol
    >>> x = Symbol("X", "X")
    >>> evaluate(Probability([("X", x)]), pd.DataFrame({"X": [0, 1, 1]}), [("X", x)])
       X  probability
    0  0     0.333333
    1  1     0.666667
    """
    free = {s for _, s in outputs}
    arbitrary = sorted(expression.free_symbols - free, key=lambda s: s.name)
    if arbitrary:
        # Free symbols that are not query variables (interventions added at line 3
        # of ID): the estimand does not depend on their values under the model, so
        # we average over their observed distribution (exact for compatible data).
        expression = Sum(
            Product([Probability([(s.variable, s) for s in arbitrary]), expression]),
            arbitrary,
        )
    variables: set[str] = set()
    _variables(expression, variables)
    variables.update(s.variable for _, s in outputs)
    table = _Table(data, variables, weight)
    ev = _Evaluator(table)
    result = ev.eval(expression)
    extra = [n for n in result.inputs if n not in {ev.input_name(s) for s in free}]
    if extra:  # pragma: no cover - guarded by construction
        raise ValueError(f"estimand has unexpected free symbols {extra}")
    syms = [s for _, s in outputs]
    if not syms:
        return pd.DataFrame({"probability": [float(result.data)]})
    # broadcast symbols the estimand does not depend on
    ones = ev.tensor(np.ones([len(table.domains[s.variable]) for s in syms]), syms)
    full = result * ones
    arr = full.align(tuple(ev.input_name(s) for s in syms)).data.numpy()
    domains = [table.domains[s.variable] for s in syms]
    rows = list(itertools.product(*domains))
    frame = pd.DataFrame(rows, columns=[c for c, _ in outputs])
    frame["probability"] = arr.reshape(-1)
    return frame


def evaluate_estimand(
    estimand: Estimand, data: pd.DataFrame, weight: str = "weight"
) -> pd.DataFrame:
    """:meth:`Estimand.evaluate`: evaluate with the estimand's own outputs.

    >>> import pandas as pd
    >>> from pyro_causalgen.identify import identify
    >>> est = identify("X -> Y", "P(Y_{X=1}=1)").estimand
    >>> evaluate_estimand(est, pd.DataFrame({"X": [0, 1, 1], "Y": [0, 1, 0]}))
       probability
    0          0.5
    """
    return evaluate(estimand.expression, data, list(estimand.outputs), weight)


__all__ = ["evaluate", "evaluate_estimand"]
