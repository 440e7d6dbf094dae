"""Provenance tracking that also notices sampled values leaving tensor land.

:class:`TrackedTensor` is a minimal provenance tensor (in the spirit of
:class:`pyro.ops.provenance.ProvenanceTensor`): the provenance of an op's output is the
union of its inputs' provenances. Unlike Pyro's, it records every conversion of a
tracked tensor to a Python value (``bool``, ``int``, ``float``, ``.item()``,
``.tolist()``), which is how a program branches on a sampled value.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyro
import torch
import zuko
from torch import Tensor
from torch.utils._pytree import tree_map

#: Tensor methods through which a value becomes a Python object (control flow).
_ESCAPES = frozenset(
    {"__bool__", "__int__", "__float__", "__index__", "item", "tolist", "__complex__"}
)

_HERE = os.path.dirname(os.path.abspath(__file__))
#: Frames in these folders are library internals, not the user's program.
_LIBRARY_DIRS = tuple(
    os.path.dirname(os.path.abspath(str(m.__file__))) + os.sep
    for m in (torch, pyro, zuko)
) + (_HERE + os.sep, os.path.join(os.path.dirname(_HERE), "mechanisms") + os.sep)


@dataclass(frozen=True)
class Escape:
    """A tracked value turned into a Python object: op, source sites, location."""

    op: str
    sites: frozenset[str]
    where: str


_RECORDER: list[list[Escape]] = []


@contextmanager
def record_escapes() -> Iterator[list[Escape]]:
    """Collect the :class:`Escape` events of tracked tensors inside the block."""
    log: list[Escape] = []
    _RECORDER.append(log)
    try:
        yield log
    finally:
        _RECORDER.pop()


_DISPATCH_FILES = frozenset(
    os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), f)
    for f in ("_tensor.py", "overrides.py")
) | {os.path.abspath(__file__)}


def _user_frame() -> str | None:
    """``file:line`` of the code that converted a tracked value, if it is the user's.

    Torch's dispatch wrappers are skipped; a conversion made inside torch, Pyro, zuko
    or the mechanisms (e.g. argument validation) is not the program's control flow.
    """
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) in (
        _DISPATCH_FILES
    ):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    path = os.path.abspath(frame.f_code.co_filename)
    if path.startswith(_LIBRARY_DIRS):
        return None
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class TrackedTensor(Tensor):
    """A tensor carrying the set of sample sites its value was computed from.

    Example::

        >>> a = TrackedTensor.wrap(torch.ones(2), frozenset({"a"}))
        >>> sorted(provenance(2 * a + torch.zeros(2)))
        ['a']
    """

    _t: Tensor
    _provenance: frozenset[str]

    @staticmethod
    def wrap(data: Tensor, sites: frozenset[str]) -> Tensor:
        """``data`` tracked with provenance ``sites`` (``data`` itself when empty)."""
        data = untrack(data)
        if not sites:
            return data
        out = data.as_subclass(TrackedTensor)
        out._t, out._provenance = data, frozenset(sites)
        return out

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        sites: set[str] = set()

        def unwrap(x: Any) -> Any:
            if isinstance(x, TrackedTensor):
                sites.update(x._provenance)
                return x._t
            return x

        args, kwargs = tree_map(unwrap, (args, kwargs or {}))
        name = getattr(func, "__name__", "")
        if sites and name in _ESCAPES and _RECORDER:
            where = _user_frame()
            if where is not None:
                _RECORDER[-1].append(Escape(name, frozenset(sites), where))
        out = func(*args, **kwargs)
        if not sites:
            return out
        prov = frozenset(sites)
        return tree_map(
            lambda x: TrackedTensor.wrap(x, prov) if isinstance(x, Tensor) else x, out
        )


def untrack(x: Any) -> Any:
    """Strip tracking from a tensor (other objects are returned unchanged)."""
    return x._t if isinstance(x, TrackedTensor) else x


def provenance(x: Any) -> frozenset[str]:
    """The sites that tensors in ``x`` (a tensor or a container of them) come from."""
    sites: set[str] = set()

    def visit(t: Any) -> Any:
        if isinstance(t, TrackedTensor):
            sites.update(t._provenance)
        return t

    tree_map(visit, x)
    return frozenset(sites)
