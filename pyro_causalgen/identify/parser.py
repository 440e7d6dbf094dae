"""Parse query strings such as ``P(Y | do(X))`` or ``P(Y_{X=1}=1 | X=0)``.

Grammar (EBNF; whitespace is ignored)::

    query      = ("P" | "Pr") "(" term { "," term }
                 [ "|" condition { "," condition } ] ")"
    condition  = "do" "(" assignment { "," assignment } ")" | term
    term       = NAME [ "_{" assignment { "," assignment } "}" ] [ "=" value ]
    assignment = NAME [ "=" value ]
    value      = INTEGER | FLOAT | "True" | "False" | NAME | QUOTED-STRING

A ``NAME`` starts with a letter and continues with letters, digits, ``_`` and
``.``; an underscore directly followed by ``{`` opens a subscript.  A query whose
terms carry subscripts is counterfactual (:class:`CounterfactualQuery`); then every
term needs a value and ``do(...)`` is not allowed (write the intervention as a
subscript).  Otherwise it is a :class:`CausalQuery`, where values are optional.
With ``parse_query(text, free_values=True)`` counterfactual terms may also omit their
value (``P(Y_{X=1} | X=0)``, the distribution of ``Y_{X=1}``); such a term's value is
the :class:`Symbol` named after its variable.
"""

from __future__ import annotations

import re
from typing import Any

from pyro_causalgen.identify.errors import QuerySyntaxError
from pyro_causalgen.identify.query import (
    CausalQuery,
    CounterfactualQuery,
    Event,
    Query,
    Symbol,
    Variable,
)

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<sub>_\{)
      | (?P<num>[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
      | (?P<name>[A-Za-z](?:[A-Za-z0-9.]|_(?!\{))*)
      | (?P<str>'[^']*'|"[^"]*")
      | (?P<op>[(){},|=])
    )""",
    re.VERBOSE,
)


class _Parser:
    def __init__(self, text: str, free_values: bool = False) -> None:
        self.text = text
        self.free_values = free_values
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        text_len = len(text)
        while pos < text_len:
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                bad = text[pos:].lstrip()[:1]
                where = text_len - len(text[pos:].lstrip())
                self.fail(f"unexpected character {bad!r} at position {where}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def fail(self, msg: str) -> None:
        raise QuerySyntaxError(f"malformed query {self.text!r}: {msg}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def where(self) -> str:
        tok = self.peek()
        return "at end of input" if tok is None else f"at position {tok[2]}"

    def expect(self, value: str) -> None:
        tok = self.peek()
        if tok is None or tok[1] != value:
            found = "" if tok is None else f", found {tok[1]!r}"
            self.fail(f"expected {value!r} {self.where()}{found}")
        self.i += 1

    def accept(self, value: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[1] == value and tok[0] in ("op", "sub", "name"):
            self.i += 1
            return True
        return False

    def name(self) -> str:
        tok = self.peek()
        if tok is None or tok[0] != "name":
            found = "" if tok is None else f", found {tok[1]!r}"
            self.fail(f"expected a variable name {self.where()}{found}")
        self.i += 1
        return tok[1]  # type: ignore[index]

    def value(self) -> Any:
        tok = self.peek()
        if tok is None or tok[0] not in ("num", "name", "str"):
            found = "" if tok is None else f", found {tok[1]!r}"
            self.fail(f"expected a value {self.where()}{found}")
        self.i += 1
        kind, text, _ = tok  # type: ignore[misc]
        if kind == "num":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "str":
            return text[1:-1]
        if text in ("True", "False"):
            return text == "True"
        return text

    def assignment(self) -> tuple[str, Any]:
        n = self.name()
        return (n, self.value()) if self.accept("=") else (n, None)

    def term(self) -> tuple[str, dict[str, Any] | None, Any]:
        n = self.name()
        sub = None
        if self.accept("_{"):
            sub = {}
            while True:
                k, v = self.assignment()
                if v is None:
                    self.fail(f"subscript of {n!r} needs a value for {k!r}")
                if k in sub:
                    self.fail(f"subscript of {n!r} sets {k!r} twice")
                sub[k] = v
                if not self.accept(","):
                    break
            self.expect("}")
        value = self.value() if self.accept("=") else None
        return n, sub, value

    def query(self) -> Query:
        head = self.peek()
        if head is None or head[1] not in ("P", "Pr"):
            self.fail("a query starts with 'P('")
        self.i += 1
        self.expect("(")
        terms = [self.term()]
        while self.accept(","):
            terms.append(self.term())
        conds: list[tuple[str, dict[str, Any] | None, Any]] = []
        dos: list[tuple[str, Any]] = []
        if self.accept("|"):
            while True:
                tok = self.peek()
                nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
                if tok is not None and tok[1] == "do" and nxt and nxt[1] == "(":
                    self.i += 2
                    dos.append(self.assignment())
                    while self.accept(","):
                        dos.append(self.assignment())
                    self.expect(")")
                else:
                    conds.append(self.term())
                if not self.accept(","):
                    break
        self.expect(")")
        if self.peek() is not None:
            self.fail(f"unexpected {self.peek()[1]!r} {self.where()}")  # type: ignore[index]
        counterfactual = any(sub for _, sub, _ in terms + conds)
        if counterfactual:
            if dos:
                self.fail(
                    "do(...) cannot be mixed with subscripts; write the intervention "
                    "as a subscript of each counterfactual term"
                )
            events, evidence = [], []
            for group, out in ((terms, events), (conds, evidence)):
                for n, sub, v in group:
                    if v is None and self.free_values:
                        v = Symbol(n, n)
                    if v is None:
                        self.fail(
                            f"counterfactual query: term {n!r} needs a value "
                            f"(write {n}{'_{...}' if sub else ''}=value)"
                        )
                    out.append(Event(Variable(n, sub or {}), v))
            return CounterfactualQuery(events, evidence)
        try:
            return CausalQuery(
                {n: v for n, _, v in terms},
                dict(dos),
                {n: v for n, _, v in conds},
            )
        except ValueError as e:
            self.fail(str(e))
            raise  # pragma: no cover


def parse_query(text: str, *, free_values: bool = False) -> Query:
    """Parse a query string (grammar in the module docstring).

    :param text: e.g. ``"P(Y1, Y2 | do(X1, X2), Z)"`` or ``"P(Y_{X=1}=1 | X=0)"``.
    :param free_values: let counterfactual terms omit their value; the value is then
        ``Symbol(name, name)`` (a free variable of the answer).
    :returns: a :class:`CausalQuery` or a :class:`CounterfactualQuery`.
    :raises QuerySyntaxError: naming the position and what was expected.

    >>> q = parse_query("P(Y1, Y2 | do(X1, X2), Z)")
    >>> q.outcomes, q.treatments, q.conditions
    (('Y1', 'Y2'), ('X1', 'X2'), ('Z',))
    >>> str(parse_query("P(Y_{X=1}=1, Y_{X=0}=0)"))
    'P(Y_{X=1}=1, Y_{X=0}=0)'
    >>> str(parse_query("P(Y_{X=1} | X=0)", free_values=True))
    'P(Y_{X=1}=Y | X=0)'
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a query string, got {type(text).__name__}")
    return _Parser(text, free_values).query()


def as_query(query: Query | str) -> Query:
    """Return ``query`` itself, or parse it if it is a string.

    >>> as_query("P(Y | do(X))").treatments
    ('X',)
    """
    if isinstance(query, Query):
        return query
    if isinstance(query, str):
        return parse_query(query)
    raise TypeError(f"expected a query or a query string, got {type(query)!r}")


__all__ = ["as_query", "parse_query"]
