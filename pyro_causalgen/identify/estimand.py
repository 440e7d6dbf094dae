"""Estimands: expression trees over observational probabilities.

An estimand is built from :class:`Probability` terms ``P(Y | X, Z)`` of the
observational distribution, :class:`Product`, :class:`Sum` (over bound symbols),
:class:`Fraction` and :class:`Constant`.  Every variable occurrence carries a value:
a :class:`~pyro_causalgen.identify.query.Symbol` (free, or bound by a sum) or a
constant.  Trees print as text (:meth:`Expression.to_text`) and LaTeX
(:meth:`Expression.to_latex`) and evaluate on data through
:meth:`Estimand.evaluate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pyro_causalgen.identify.query import Query, Symbol, _fmt_value

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

Assignment = tuple[str, Any]


def _fmt_assignment(var: str, value: Any, latex: bool = False) -> str:
    if isinstance(value, Symbol) and value.variable == var:
        return value.name
    return f"{var}={_fmt_value(value)}"


class Expression:
    """Base class of estimand expressions.

    >>> from pyro_causalgen.identify.query import Symbol
    >>> p = Probability([("Y", Symbol("Y", "Y"))], [("X", 1)])
    >>> str(p), sorted(s.name for s in p.free_symbols)
    ('P(Y | X=1)', ['Y'])
    """

    __slots__ = ("_free",)

    def _compute_free(self) -> frozenset[Symbol]:
        raise NotImplementedError

    @property
    def free_symbols(self) -> frozenset[Symbol]:
        """Symbols not bound by a sum inside the expression."""
        try:
            return self._free  # type: ignore[has-type]
        except AttributeError:
            self._free = self._compute_free()
            return self._free

    def to_text(self) -> str:
        """Plain-text rendering (``Σ`` for sums)."""
        raise NotImplementedError

    def to_latex(self) -> str:
        """LaTeX rendering."""
        raise NotImplementedError

    def substitute(self, mapping: Mapping[Symbol, Any]) -> Expression:
        """Replace free symbols by values (constants or other symbols)."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_text()!r})"

    # precedence helpers: products and fractions wrap compound children
    def _atom_text(self) -> str:
        return self.to_text()

    def _atom_latex(self) -> str:
        return self.to_latex()


class Constant(Expression):
    """A number (``1`` for an empty conjunction, ``0`` for an inconsistent one).

    >>> str(Constant(0))
    '0'
    """

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    def _compute_free(self) -> frozenset[Symbol]:
        return frozenset()

    def to_text(self) -> str:
        return f"{self.value:g}"

    to_latex = to_text

    def substitute(self, mapping: Mapping[Symbol, Any]) -> Expression:
        return self


class Probability(Expression):
    """A term ``P(outcomes | given)`` of the observational distribution.

    :param outcomes: ``(variable, value)`` pairs.
    :param given: ``(variable, value)`` pairs conditioned on.

    >>> from pyro_causalgen.identify.query import Symbol
    >>> y, x = Symbol("Y", "Y"), Symbol("X", "X")
    >>> Probability([("Y", y)], [("X", x)]).to_latex()
    'P(Y \\\\mid X)'
    """

    __slots__ = ("outcomes", "given")

    def __init__(
        self, outcomes: Iterable[Assignment], given: Iterable[Assignment] = ()
    ):
        self.outcomes: tuple[Assignment, ...] = tuple(outcomes)
        self.given: tuple[Assignment, ...] = tuple(given)

    def _compute_free(self) -> frozenset[Symbol]:
        return frozenset(
            v for _, v in self.outcomes + self.given if isinstance(v, Symbol)
        )

    def to_text(self) -> str:
        left = ", ".join(_fmt_assignment(k, v) for k, v in self.outcomes)
        if not self.given:
            return f"P({left})"
        right = ", ".join(_fmt_assignment(k, v) for k, v in self.given)
        return f"P({left} | {right})"

    def to_latex(self) -> str:
        return self.to_text().replace(" | ", " \\mid ")

    def substitute(self, mapping: Mapping[Symbol, Any]) -> Expression:
        if len(mapping) < len(self.free_symbols):
            if not any(k in self.free_symbols for k in mapping):
                return self
        elif not any(s in mapping for s in self.free_symbols):
            return self

        def sub(pairs: tuple[Assignment, ...]) -> list[Assignment]:
            return [
                (k, mapping.get(v, v) if isinstance(v, Symbol) else v) for k, v in pairs
            ]

        return Probability(sub(self.outcomes), sub(self.given))


class Product(Expression):
    """A product of factors.

    >>> from pyro_causalgen.identify.query import Symbol
    >>> x, y = Symbol("X", "X"), Symbol("Y", "Y")
    >>> str(Product([Probability([("X", x)]), Probability([("Y", y)], [("X", x)])]))
    'P(X) P(Y | X)'
    """

    __slots__ = ("factors",)

    def __init__(self, factors: Iterable[Expression]) -> None:
        self.factors: tuple[Expression, ...] = tuple(factors)

    def _compute_free(self) -> frozenset[Symbol]:
        out: frozenset[Symbol] = frozenset()
        for f in self.factors:
            out |= f.free_symbols
        return out

    def to_text(self) -> str:
        if not self.factors:
            return "1"
        return " ".join(f._atom_text() for f in self.factors)

    def to_latex(self) -> str:
        if not self.factors:
            return "1"
        return " ".join(f._atom_latex() for f in self.factors)

    def _atom_text(self) -> str:
        return f"[{self.to_text()}]" if len(self.factors) > 1 else self.to_text()

    def _atom_latex(self) -> str:
        return (
            f"\\left[{self.to_latex()}\\right]"
            if len(self.factors) > 1
            else self.to_latex()
        )

    def substitute(self, mapping: Mapping[Symbol, Any]) -> Expression:
        return Product(f.substitute(mapping) for f in self.factors)


class Sum(Expression):
    """A sum of ``expression`` over all values of the bound symbols ``over``.

    >>> from pyro_causalgen.identify.query import Symbol
    >>> z, y = Symbol("Z", "Z"), Symbol("Y", "Y")
    >>> str(Sum(Probability([("Y", y), ("Z", z)]), [z]))
    'Σ_{Z} P(Y, Z)'
    """

    __slots__ = ("expression", "over")

    def __init__(self, expression: Expression, over: Iterable[Symbol]) -> None:
        self.expression = expression
        self.over: tuple[Symbol, ...] = tuple(over)

    def _compute_free(self) -> frozenset[Symbol]:
        return self.expression.free_symbols - frozenset(self.over)

    def to_text(self) -> str:
        names = ", ".join(s.name for s in self.over)
        return f"Σ_{{{names}}} {self.expression.to_text()}"

    def to_latex(self) -> str:
        names = ", ".join(s.name for s in self.over)
        return f"\\sum_{{{names}}} {self.expression.to_latex()}"

    def _atom_text(self) -> str:
        return f"[{self.to_text()}]"

    def _atom_latex(self) -> str:
        return f"\\left[{self.to_latex()}\\right]"

    def substitute(self, mapping: Mapping[Symbol, Any]) -> Expression:
        inner = {k: v for k, v in mapping.items() if k not in self.over}
        return Sum(self.expression.substitute(inner), self.over)


class Fraction(Expression):
    """``numerator / denominator``.

    >>> from pyro_causalgen.identify.query import Symbol
    >>> x, y = Symbol("X", "X"), Symbol("Y", "Y")
    >>> num = Probability([("X", x), ("Y", y)])
    >>> print(Fraction(num, Sum(num, [y])).to_latex())
    \\frac{P(X, Y)}{\\sum_{Y} P(X, Y)}
    """

    __slots__ = ("numerator", "denominator")

    def __init__(self, numerator: Expression, denominator: Expression) -> None:
        self.numerator = numerator
        self.denominator = denominator

    def _compute_free(self) -> frozenset[Symbol]:
        return self.numerator.free_symbols | self.denominator.free_symbols

    def to_text(self) -> str:
        def wrap(e: Expression) -> str:
            t = e.to_text()
            return t if isinstance(e, (Probability, Constant)) else f"({t})"

        return f"{wrap(self.numerator)} / {wrap(self.denominator)}"

    def to_latex(self) -> str:
        return f"\\frac{{{self.numerator.to_latex()}}}{{{self.denominator.to_latex()}}}"

    def _atom_text(self) -> str:
        return f"[{self.to_text()}]"

    def substitute(self, mapping: Mapping[Symbol, Any]) -> Expression:
        return Fraction(
            self.numerator.substitute(mapping), self.denominator.substitute(mapping)
        )


def rename_bound(expression: Expression, taken: Iterable[str] = ()) -> Expression:
    """Rename bound symbols that shadow free or outer symbols (``X`` -> ``X'``).

    The result denotes the same function; it only reads better.

    >>> from pyro_causalgen.identify.query import Symbol
    >>> x, y = Symbol("X", "X"), Symbol("Y", "Y")
    >>> inner = Sum(Probability([("Y", y)], [("X", x)]), [x])
    >>> str(rename_bound(Product([Probability([("X", x)]), inner])))
    "P(X) [Σ_{X'} P(Y | X')]"
    """
    used = set(taken) | {s.name for s in expression.free_symbols}
    return _rename(expression, used, {})


def _rename(e: Expression, used: set[str], mapping: dict[Symbol, Symbol]) -> Expression:
    if isinstance(e, Probability):
        return e.substitute(mapping) if mapping else e
    if isinstance(e, Product):
        return Product(_rename(f, used, mapping) for f in e.factors)
    if isinstance(e, Fraction):
        return Fraction(
            _rename(e.numerator, used, mapping), _rename(e.denominator, used, mapping)
        )
    if isinstance(e, Sum):
        inner = dict(mapping)
        new_over = []
        local_used = set(used)
        for s in e.over:
            name = s.name
            while name in local_used:
                name += "'"
            local_used.add(name)
            if name != s.name:
                t = Symbol(name, s.variable)
                inner[s] = t
                new_over.append(t)
            else:
                inner.pop(s, None)
                new_over.append(s)
        return Sum(_rename(e.expression, local_used, inner), new_over)
    return e


class Estimand:
    """The identified formula for a query, ready to print or evaluate.

    :ivar expression: the expression tree.
    :ivar query: the query it answers.
    :ivar outputs: ``(column, symbol)`` pairs: the free variables of the answer.

    >>> from pyro_causalgen.identify import identify
    >>> est = identify("Z -> X -> Y; Z -> Y", "P(Y | do(X))").estimand
    >>> print(est)
    Σ_{Z} P(Z) P(Y | Z, X)
    """

    def __init__(
        self,
        expression: Expression,
        query: Query,
        outputs: Iterable[tuple[str, Symbol]],
    ) -> None:
        self.expression = expression
        self.query = query
        self.outputs: tuple[tuple[str, Symbol], ...] = tuple(outputs)

    def to_text(self) -> str:
        """Plain-text formula.

        >>> from pyro_causalgen.identify import identify
        >>> identify("X -> Y", "P(Y | do(X))").estimand.to_text()
        'P(Y | X)'
        """
        return self.expression.to_text()

    def to_latex(self) -> str:
        """LaTeX formula.

        >>> from pyro_causalgen.identify import identify
        >>> identify("X -> Y", "P(Y | do(X))").estimand.to_latex()
        'P(Y \\\\mid X)'
        """
        return self.expression.to_latex()

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"Estimand({self.query!s} = {self.to_text()})"

    def _repr_latex_(self) -> str:
        return f"${self.to_latex()}$"

    def evaluate(self, data: pd.DataFrame, weight: str = "weight") -> pd.DataFrame:
        """Evaluate on discrete data (see :func:`~pyro_causalgen.identify.evaluate`).

        :param data: one row per observation, one column per variable, and an
            optional ``weight`` column (an exact joint table as weighted rows).
        :returns: one column per free query variable and a ``probability`` column.
        :raises PositivityError: if a conditional needs an event of probability 0.

        >>> import pandas as pd
        >>> from pyro_causalgen.identify import identify
        >>> data = pd.DataFrame({"X": [0, 0, 1, 1], "Y": [0, 1, 1, 1]})
        >>> identify("X -> Y", "P(Y=1 | do(X))").estimand.evaluate(data)
           X  probability
        0  0          0.5
        1  1          1.0
        """
        from pyro_causalgen.identify.evaluate import evaluate_estimand

        return evaluate_estimand(self, data, weight=weight)


__all__ = [
    "Constant",
    "Estimand",
    "Expression",
    "Fraction",
    "Probability",
    "Product",
    "Sum",
    "rename_bound",
]
