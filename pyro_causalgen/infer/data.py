"""Checking and converting user data (dicts of tensors, DataFrames) for a model."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_causalgen.errors import DataError


def _frame_columns(frame: Any, name: str, event_shape: tuple[int, ...]) -> Any:
    """A site's values from a DataFrame: column ``name`` or ``name[0]``, ..."""
    if name in frame.columns:
        return frame[name].to_numpy()
    prefix = f"{name}["
    cols = [c for c in frame.columns if isinstance(c, str) and c.startswith(prefix)]
    if not cols:
        return None
    if len(event_shape) != 1 or len(cols) != event_shape[0]:
        raise DataError(
            f"column(s) {cols} give {len(cols)} features for site '{name}' of event "
            f"shape {event_shape}"
        )
    cols = sorted(cols, key=lambda c: int(c[len(prefix) : -1]))
    return frame[cols].to_numpy()


def _frame_owner(column: str) -> str:
    return column.split("[", 1)[0] if isinstance(column, str) else str(column)


def prepare_data(
    data: Mapping[str, Any] | Any,
    event_shapes: Mapping[str, tuple[int, ...]],
    device: torch.device,
    dtype: torch.dtype,
    discrete: frozenset[str] = frozenset(),
    optional: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, Tensor]:
    """Validate ``data`` against a model's sites and return tensors on ``device``.

    :param data: a dict ``site -> array/tensor`` or a pandas DataFrame (one column per
        scalar site; ``site[0]``, ``site[1]``, ... for vector sites).
    :param event_shapes: every site the data must cover, with its event shape.
    :param discrete: sites whose values are category indices (kept as ``long``).
    :param optional: sites taken when the data has them (e.g. ``pyro.deterministic``).
    :returns: ``site -> tensor`` with leading dim ``N`` (the number of rows).
    :raises DataError: naming the column for missing columns, NaN or infinite values,
        non-numeric dtypes, wrong shapes or unequal row counts.
    """
    is_frame = hasattr(data, "columns") and hasattr(data, "to_numpy")
    if not is_frame and not isinstance(data, Mapping):
        raise DataError(
            f"data must be a dict of tensors or a DataFrame, got {type(data)}"
        )
    out: dict[str, Tensor] = {}
    missing = []
    for name, shape in event_shapes.items():
        raw = _frame_columns(data, name, shape) if is_frame else data.get(name)
        if raw is None:
            missing.append(name)
            continue
        out[name] = _to_tensor(name, raw, shape, device, dtype, name in discrete)
    for name, shape in (optional or {}).items():
        raw = _frame_columns(data, name, shape) if is_frame else data.get(name)
        if raw is not None:
            out[name] = _to_tensor(name, raw, shape, device, dtype, False)
    if missing:
        have = sorted({_frame_owner(c) for c in data.columns} if is_frame else data)
        raise DataError(f"data has no column for site(s) {missing}; it has {have}")
    given = {_frame_owner(c) for c in data.columns} if is_frame else set(data)
    known = set(event_shapes) | set(optional or {}) | {"weight"}
    extra = sorted(c for c in given if c not in known)
    if extra:
        warnings.warn(
            f"data columns {extra} are not sites of the model; ignored", stacklevel=3
        )
    rows = {k: v.shape[0] for k, v in out.items()}
    if len(set(rows.values())) > 1:
        raise DataError(f"columns have different numbers of rows: {rows}")
    return out


def _to_tensor(
    name: str,
    raw: Any,
    shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    discrete: bool,
) -> Tensor:
    if isinstance(raw, Tensor):
        t = raw.detach()
    else:
        arr = np.asarray(raw)
        if arr.dtype.kind not in "biuf":
            raise DataError(
                f"column '{name}' has non-numeric dtype {arr.dtype}; convert it first"
            )
        t = torch.from_numpy(np.array(arr, copy=True))
    if t.is_complex() or t.dtype == torch.bool and not discrete:
        raise DataError(f"column '{name}' has dtype {t.dtype}; expected real numbers")
    if t.is_floating_point() and not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).reshape(t.shape[0], -1).any(-1).nonzero()[:5, 0]
        raise DataError(
            f"column '{name}' has NaN or infinite values (first rows: {bad.tolist()})"
        )
    if tuple(t.shape[1:]) != tuple(shape) or t.dim() == 0:
        raise DataError(
            f"column '{name}' has shape {tuple(t.shape)}, expected (N, "
            f"{', '.join(map(str, shape))})"
            if shape
            else f"column '{name}' has shape {tuple(t.shape)}, expected (N,)"
        )
    if discrete:
        if t.is_floating_point() and (t != t.round()).any():
            raise DataError(f"column '{name}' is discrete but has non-integer values")
        return t.to(device=device, dtype=torch.long)
    return t.to(device=device, dtype=dtype)


def shuffled_batches(
    tensors: Mapping[str, Tensor], batch_size: int, generator: torch.Generator
) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """One epoch of minibatches ``(b, {name: (b, ...)})`` of ``tensors``, random order.

    The order is drawn on the CPU by ``generator`` (so it does not depend on the
    device) and moved to the tensors' device; the last batch may be smaller.

    Example::

        >>> from pyro_causalgen.seeding import seeded_generator
        >>> rows = {"x": torch.arange(5.0)}
        >>> batches = list(shuffled_batches(rows, 2, seeded_generator(0)))
        >>> [rows for rows, _ in batches]
        [2, 2, 1]
        >>> sorted(torch.cat([b["x"] for _, b in batches]).tolist())
        [0.0, 1.0, 2.0, 3.0, 4.0]
    """
    first = next(iter(tensors.values()))
    n_rows = first.shape[0]
    order = torch.randperm(n_rows, generator=generator).to(first.device)
    for start in range(0, n_rows, batch_size):
        idx = order[start : start + batch_size]
        yield len(idx), {k: v[idx] for k, v in tensors.items()}
