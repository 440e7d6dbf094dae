"""Estimands: expression trees over observational probabilities.

An estimand is built from :class:`Probability` terms ``P(Y | X, Z)`` of the
observational distribution, :class:`Product`, :class:`Sum` (over bound symbols),
:class:`Fraction` and :class:`Constant`.  Every variable occurrence carries a value:
a :class:`~pyro_causalgen.identify.query.Symbol` (free, or bound by a sum) or a
constant.  Trees print as text (:meth:`Expression.to_text`) and LaTeX
(:meth:`Expression.to_latex`) and evaluate on data through
:meth:`Estimand.evaluate`.

Terms built by the identification engine are stored as bit masks over a
:class:`VariableTable` (:meth:`Probability.from_masks`): their ``(variable, value)``
pairs, free symbols and text are built only when read, and every node caches its
text, so large estimands with shared sub-expressions stay cheap to build, rename
and print.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyro_causalgen.graph._bits import iter_bits
from pyro_causalgen.identify.query import Query, Symbol, _fmt_value

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

Assignment = tuple[str, Any]


def _fmt_assignment(var: str, value: Any, latex: bool = False) -> str:
    if isinstance(value, Symbol) and value.variable == var:
        return value.name
    return f"{var}={_fmt_value(value)}"


class VariableTable:
    """Numbered variables and their default symbols (``Symbol(v, v)``), so that
    :class:`Probability` terms can be stored as bit masks and rendered fast.

    :param names: variable names; variable ``i`` is bit ``i`` of a mask.

    >>> t = VariableTable(["A", "B", "C"])
    >>> t.text(0b101)
    'A, C'
    >>> str(Probability.from_masks(t, 0b100, 0b011))
    'P(C | A, B)'
    """

    __slots__ = ("names", "syms", "index", "_chunks")

    _CHUNK = 64

    def __init__(self, names: Sequence[str]) -> None:
        self.names: tuple[str, ...] = tuple(names)
        self.syms: tuple[Symbol, ...] = tuple(Symbol(n, n) for n in self.names)
        self.index: dict[Symbol, int] = {s: i for i, s in enumerate(self.syms)}
        self._chunks: dict[tuple[int, int], str] = {}

    def symbols(self, mask: int) -> frozenset[Symbol]:
        """The default symbols of the variables in ``mask``."""
        syms = self.syms
        return frozenset(syms[i] for i in iter_bits(mask))

    def mask_of(self, symbols: Iterable[Symbol]) -> int:
        """Bits of the symbols that are default symbols of this table."""
        index = self.index
        m = 0
        for s in symbols:
            i = index.get(s)
            if i is not None:
                m |= 1 << i
        return m

    def text(self, mask: int) -> str:
        """``", ".join(names[i] for i in mask)`` in increasing ``i``; the text of
        every 64-variable chunk is cached, so long masks that share chunks render
        in time proportional to their number of chunks."""
        if not mask:
            return ""
        if mask.bit_length() <= self._CHUNK:
            return self._chunk(0, mask)
        size = (mask.bit_length() + 63) // 64 * 8
        words = memoryview(mask.to_bytes(size, "little")).cast("Q")
        parts = [self._chunk(k, w) for k, w in enumerate(words) if w]
        return ", ".join(parts)

    def _chunk(self, k: int, word: int) -> str:
        key = (k, word)
        hit = self._chunks.get(key)
        if hit is None:
            base = k * self._CHUNK
            names = self.names
            hit = ", ".join(names[base + j] for j in iter_bits(word))
            self._chunks[key] = hit
        return hit

    def render(self, mask: int, over: dict[int, Any] | None) -> str:
        """Text of the assignments of ``mask``; ``over`` maps a variable to a value
        other than its default symbol."""
        if over:
            hit = sorted(j for j in over if mask >> j & 1)
            if hit:
                parts = []
                lo = 0
                for j in hit:
                    seg = mask & ((1 << j) - 1) & ~((1 << lo) - 1)
                    if seg:
                        parts.append(self.text(seg))
                    parts.append(_fmt_assignment(self.names[j], over[j]))
                    lo = j + 1
                seg = mask >> lo << lo
                if seg:
                    parts.append(self.text(seg))
                return ", ".join(parts)
        return self.text(mask)

    def pairs(self, mask: int, over: dict[int, Any] | None) -> tuple:
        """``(variable, value)`` pairs of ``mask`` in increasing order."""
        names, syms = self.names, self.syms
        if over:
            return tuple((names[j], over.get(j, syms[j])) for j in iter_bits(mask))
        return tuple((names[j], syms[j]) for j in iter_bits(mask))


# Free symbols of an expression: (table, mask of default symbols of ``table``,
# other symbols).  Masks keep large estimands cheap; the set is built on demand.
_FreeParts = tuple[VariableTable | None, int, frozenset]
_NO_FREE: _FreeParts = (None, 0, frozenset())


def _join_parts(items: Iterable[_FreeParts]) -> _FreeParts:
    table: VariableTable | None = None
    mask = 0
    extra: frozenset[Symbol] = frozenset()
    for t, m, x in items:
        if x:
            extra = extra | x
        if not m:
            continue
        if table is None or t is table:
            table = t
            mask |= m
        else:  # a second numbering: keep those symbols as a set
            extra = extra | t.symbols(m)  # type: ignore[union-attr]
    return (table if mask else None), mask, extra


def _mentions(parts: _FreeParts, mapping: Mapping[Symbol, Any]) -> bool:
    """Whether a key of ``mapping`` is among the free symbols ``parts``."""
    table, mask, extra = parts
    if extra and any(k in extra for k in mapping):
        return True
    if mask:
        index = table.index  # type: ignore[union-attr]
        for k in mapping:
            i = index.get(k)
            if i is not None and mask >> i & 1:
                return True
    return False


class Expression:
    """Base class of estimand expressions.

    >>> from pyro_causalgen.identify.query import Symbol
    >>> p = Probability([("Y", Symbol("Y", "Y"))], [("X", 1)])
    >>> str(p), sorted(s.name for s in p.free_symbols)
    ('P(Y | X=1)', ['Y'])
    """

    __slots__ = ("_free", "_parts", "_text")

    def _compute_parts(self) -> _FreeParts:
        raise NotImplementedError

    def _free_parts(self) -> _FreeParts:
        try:
            return self._parts  # type: ignore[has-type]
        except AttributeError:
            self._parts = self._compute_parts()
            return self._parts

    @property
    def free_symbols(self) -> frozenset[Symbol]:
        """Symbols not bound by a sum inside the expression."""
        try:
            return self._free  # type: ignore[has-type]
        except AttributeError:
            table, mask, extra = self._free_parts()
            if mask:
                extra = extra | table.symbols(mask)  # type: ignore[union-attr]
            self._free = extra
            return extra

    def to_text(self) -> str:
        """Plain-text rendering (``Σ`` for sums); computed once per node."""
        try:
            return self._text  # type: ignore[has-type]
        except AttributeError:
            self._text = self._render_text()
            return self._text

    def _render_text(self) -> str:
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

    def _compute_parts(self) -> _FreeParts:
        return _NO_FREE

    def _render_text(self) -> str:
        return f"{self.value:g}"

    def to_latex(self) -> str:
        return self.to_text()

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

    __slots__ = ("_outcomes", "_given", "_table", "_omask", "_gmask", "_over")

    def __init__(
        self, outcomes: Iterable[Assignment], given: Iterable[Assignment] = ()
    ):
        self._outcomes: tuple[Assignment, ...] | None = tuple(outcomes)
        self._given: tuple[Assignment, ...] | None = tuple(given)
        self._table: VariableTable | None = None
        self._omask = self._gmask = 0
        self._over: dict[int, Any] | None = None

    @classmethod
    def from_masks(
        cls,
        table: VariableTable,
        outcomes: int,
        given: int = 0,
        over: dict[int, Any] | None = None,
    ) -> Probability:
        """``P(outcomes | given)`` over numbered variables, each at its default
        symbol unless ``over`` gives it another value; the pairs are built only
        when read.

        >>> t = VariableTable(["X", "Y"])
        >>> Probability.from_masks(t, 0b10, 0b01, over={0: 1}).given
        (('X', 1),)
        """
        self = cls.__new__(cls)
        self._outcomes = self._given = None
        self._table = table
        self._omask = outcomes
        self._gmask = given
        self._over = over or None
        return self

    @property
    def outcomes(self) -> tuple[Assignment, ...]:
        """``(variable, value)`` pairs of the outcomes."""
        if self._outcomes is None:
            self._outcomes = self._table.pairs(  # type: ignore[union-attr]
                self._omask, self._over
            )
        return self._outcomes

    @property
    def given(self) -> tuple[Assignment, ...]:
        """``(variable, value)`` pairs conditioned on."""
        if self._given is None:
            self._given = self._table.pairs(  # type: ignore[union-attr]
                self._gmask, self._over
            )
        return self._given

    def _compute_parts(self) -> _FreeParts:
        table = self._table
        if table is None:
            return (
                None,
                0,
                frozenset(
                    v for _, v in self.outcomes + self.given if isinstance(v, Symbol)
                ),
            )
        mask = self._omask | self._gmask
        over = self._over
        if not over:
            return (table if mask else None), mask, frozenset()
        extra = frozenset(
            v for j, v in over.items() if mask >> j & 1 and isinstance(v, Symbol)
        )
        mask &= ~table.mask_of(table.syms[j] for j in over)
        return (table if mask else None), mask, extra

    def _render_text(self) -> str:
        table = self._table
        if table is None:
            left = ", ".join(_fmt_assignment(k, v) for k, v in self.outcomes)
            if not self.given:
                return f"P({left})"
            right = ", ".join(_fmt_assignment(k, v) for k, v in self.given)
            return f"P({left} | {right})"
        left = table.render(self._omask, self._over)
        if not self._gmask:
            return f"P({left})"
        return f"P({left} | {table.render(self._gmask, self._over)})"

    def to_latex(self) -> str:
        return self.to_text().replace(" | ", " \\mid ")

    def substitute(self, mapping: Mapping[Symbol, Any]) -> Expression:
        table = self._table
        if table is not None:
            return self._substitute_masked(table, mapping)
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

    def _substitute_masked(
        self, table: VariableTable, mapping: Mapping[Symbol, Any]
    ) -> Expression:
        mask = self._omask | self._gmask
        over = self._over or {}
        hit: dict[int, Any] = {}
        if len(mapping) <= mask.bit_count():
            index = table.index
            for k, v in mapping.items():
                j = index.get(k)
                if j is not None and mask >> j & 1 and j not in over:
                    hit[j] = v
        else:
            syms = table.syms
            for j in iter_bits(mask):
                if j not in over and syms[j] in mapping:
                    hit[j] = mapping[syms[j]]
        for j, v in over.items():
            if mask >> j & 1 and isinstance(v, Symbol) and v in mapping:
                hit[j] = mapping[v]
        if not hit:
            return self
        return Probability.from_masks(table, self._omask, self._gmask, {**over, **hit})


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

    def _compute_parts(self) -> _FreeParts:
        return _join_parts(f._free_parts() for f in self.factors)

    def _render_text(self) -> str:
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
        if not _mentions(self._free_parts(), mapping):
            return self
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

    def _compute_parts(self) -> _FreeParts:
        table, mask, extra = self.expression._free_parts()
        if mask:
            mask &= ~table.mask_of(self.over)  # type: ignore[union-attr]
        if extra:
            extra = extra - frozenset(self.over)
        return (table if mask else None), mask, extra

    def _render_text(self) -> str:
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
        if not _mentions(self._free_parts(), mapping):
            return self
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

    def _compute_parts(self) -> _FreeParts:
        return _join_parts(
            (self.numerator._free_parts(), self.denominator._free_parts())
        )

    def _render_text(self) -> str:
        def wrap(e: Expression) -> str:
            t = e.to_text()
            return t if isinstance(e, (Probability, Constant)) else f"({t})"

        return f"{wrap(self.numerator)} / {wrap(self.denominator)}"

    def to_latex(self) -> str:
        return f"\\frac{{{self.numerator.to_latex()}}}{{{self.denominator.to_latex()}}}"

    def _atom_text(self) -> str:
        return f"[{self.to_text()}]"

    def substitute(self, mapping: Mapping[Symbol, Any]) -> Expression:
        if not _mentions(self._free_parts(), mapping):
            return self
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
        factors = [_rename(f, used, mapping) for f in e.factors]
        if all(a is b for a, b in zip(factors, e.factors)):
            return e  # unchanged: keep the node (and its cached text)
        return Product(factors)
    if isinstance(e, Fraction):
        num = _rename(e.numerator, used, mapping)
        den = _rename(e.denominator, used, mapping)
        if num is e.numerator and den is e.denominator:
            return e
        return Fraction(num, den)
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
        body = _rename(e.expression, local_used, inner)
        if body is e.expression and all(a is b for a, b in zip(new_over, e.over)):
            return e
        return Sum(body, new_over)
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
    "VariableTable",
    "rename_bound",
]
