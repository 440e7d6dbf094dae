"""Ensembles in one batched fit: ``K`` members as ``K`` copies of every site.

``K`` separate fits of a small causal model spend their time in Python and kernel
launches, not arithmetic. Here the ``K`` members of a
:class:`~pyro_causalgen.scm.StructuralCausalModel` become one model over the graph
repeated ``K`` times (site ``y`` of member ``k`` is ``y@k``, with parents ``x@k``), so
the scalar flow sites of all members share one
:class:`~pyro_causalgen.mechanisms.stacked.StackedFlows` call per group and one Adam
step updates every member. Each member sees the same minibatch with its own row
weights:

- ``"bootstrap"``: multinomial counts (the non-parametric bootstrap); rows a member
  did not draw (about 37%) are its validation rows and its *out-of-bag* rows;
- ``"bayesian_bootstrap"``: ``N x Dirichlet(1, ..., 1)`` weights (Rubin 1981), with a
  shared validation split;
- ``"ensemble"``: weight 1 on every training row (members differ by initialisation);
- ``"crossfit"``: member ``k`` leaves out fold ``k`` of ``K`` (cross-fitting).

Members come out as ordinary, independent models (:attr:`BatchedFit.members`), so
everything that takes an ensemble takes them; :attr:`BatchedFit.weights` tells the
doubly robust answer which rows each member never saw.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyro.poutine as poutine
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyro_causalgen.errors import CausalModelError, DataError
from pyro_causalgen.infer.data import shuffled_batches
from pyro_causalgen.infer.fit import FitHistory, _Standardize, prepare_model_data
from pyro_causalgen.scm import StructuralCausalModel
from pyro_causalgen.seeding import seeded_generator

#: Row weightings of :func:`fit_batched`.
WEIGHTINGS = ("bootstrap", "bayesian_bootstrap", "ensemble", "crossfit")


def member_site(name: str, k: int) -> str:
    """Name of site ``name`` of member ``k`` in the batched model.

    >>> member_site("y", 3)
    'y@3'
    """
    return f"{name}@{k}"


@dataclass
class BatchedFit:
    """What :func:`fit_batched` returns.

    :ivar members: ``K`` independent fitted models (same class and config as
        ``build()``).
    :ivar weights: ``(K, N)`` row weights each member was fitted with (``0``: the row
        was held out of that member).
    :ivar data: the ``N`` prepared rows, ``{site: (N, ...)}``.
    :ivar history: mean over members of the per-row training and validation NLL.
    :ivar member_val_loss: each member's validation NLL at the restored epoch,
        ``(K,)``.

    Example::

        >>> build = lambda: StructuralCausalModel({"x": []}, mechanism="locscale")
        >>> out = fit_batched(build, {"x": torch.randn(30)}, members=3, epochs=2,
        ...                   seed=0)
        >>> len(out.members), tuple(out.weights.shape)
        (3, (3, 30))
    """

    members: list[nn.Module]
    weights: Tensor
    data: dict[str, Tensor]
    history: FitHistory
    member_val_loss: Tensor = field(default_factory=lambda: torch.zeros(0))


def row_weights(
    n_rows: int,
    members: int,
    method: str,
    val_fraction: float,
    generator: torch.Generator,
) -> Tensor:
    """``(members, n_rows)`` training weights; ``0`` marks a member's held-out rows.

    >>> w = row_weights(6, 3, "crossfit", 0.0, torch.Generator().manual_seed(0))
    >>> (w == 0).sum(1).tolist(), (w == 0).sum(0).tolist()
    ([2, 2, 2], [1, 1, 1, 1, 1, 1])
    """
    if method not in WEIGHTINGS:
        raise ValueError(f"unknown method {method!r}; use one of {list(WEIGHTINGS)}")
    if method == "bootstrap":
        draws = torch.randint(0, n_rows, (members, n_rows), generator=generator)
        w = torch.zeros(members, n_rows)
        return w.scatter_add_(1, draws, torch.ones(members, n_rows))
    if method == "crossfit":
        fold = torch.randperm(n_rows, generator=generator) % members
        return (fold[None, :] != torch.arange(members)[:, None]).float()
    if method == "ensemble":
        w = torch.ones(members, n_rows)
    else:
        g = torch.empty(members, n_rows).exponential_(generator=generator)
        w = n_rows * g / g.sum(1, keepdim=True)
    n_val = int(round(val_fraction * n_rows))
    if n_val:
        val = torch.randperm(n_rows, generator=generator)[:n_val]
        w[:, val] = 0.0
        w = w * n_rows / w.sum(1, keepdim=True)
    return w


def _expanded(template: StructuralCausalModel, members: int) -> StructuralCausalModel:
    """The model over ``members`` copies of the template's graph."""
    cfg = template.config
    names = set(cfg["parents"])
    clash = [n for n in names for k in range(members) if member_site(n, k) in names]
    if clash:
        raise CausalModelError(
            f"variable names {sorted(set(clash))} clash with the member sites of a "
            "batched ensemble ('name@k')"
        )
    kw = dict(cfg["mechanism_kwargs"] or {})
    per_site = bool(kw) and all(k in names for k in kw)
    parents, shapes, kinds, kwargs = {}, {}, {}, {}
    for k in range(members):
        for v, pas in cfg["parents"].items():
            vk = member_site(v, k)
            parents[vk] = [member_site(p, k) for p in pas]
            shapes[vk] = cfg["shapes"][v]
            kinds[vk] = cfg["mechanism"][v]
            if per_site:
                kwargs[vk] = dict(kw.get(v, {}))
    return StructuralCausalModel(
        parents,
        shapes,
        kinds,
        kwargs if per_site else kw,
        stack=cfg["stack"],
    )


class _MemberLogProb:
    """``log p`` of every member on a batch of rows, ``(K, rows)``, in one pass."""

    def __init__(self, big: StructuralCausalModel, names: list[str], members: int):
        self.big, self.members = big, members
        owner = {member_site(v, k): k for k in range(members) for v in names}
        self.stacked = [
            torch.tensor([owner[s] for s in g.sites], dtype=torch.long)
            for g in big.stacks
        ]
        self.unstacked = [(n, owner[n]) for n in big.unstacked]

    def __call__(self, batch: Mapping[str, Tensor]) -> Tensor:
        big = self.big
        rows = next(iter(batch.values())).shape[0]
        data = {
            member_site(v, k): x for v, x in batch.items() for k in range(self.members)
        }
        out: Tensor | None = None
        parts = []
        for group, owner in zip(big.stacks, self.stacked):
            lp = group.log_prob_sites(data)  # (rows, S)
            parts.append((lp.T, owner.to(lp.device)))
        for name, k in self.unstacked:
            pa = {p: data[p] for p in big.parents[name]}
            lp = big.unstacked[name](**pa).log_prob(data[name])
            parts.append((lp.reshape(1, rows), torch.tensor([k], device=lp.device)))
        for lp, owner in parts:
            if out is None:
                out = lp.new_zeros(self.members, rows)
            out = out.index_add(0, owner, lp)
        assert out is not None
        return out


def _extract(
    build: Callable[[], nn.Module], big: StructuralCausalModel, names: list[str], k: int
) -> nn.Module:
    """Member ``k`` as a standalone model built by ``build``."""
    member = build()
    assert isinstance(member, StructuralCausalModel)
    member.to(next(big.parameters()).device)
    for v in names:
        vk = member_site(v, k)
        if v in member.unstacked:
            member.unstacked[v].load_state_dict(big.unstacked[vk].state_dict())
        else:
            source = big.mechanism(vk)
            member.mechanism(v).group.load_site(v, source.unstack())  # type: ignore
    return member


def fit_batched(
    build: Callable[[], nn.Module],
    data: Mapping[str, Any] | Any,
    members: int = 20,
    method: str = "bootstrap",
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    val_fraction: float = 0.1,
    patience: int | None = 10,
    clip_norm: float | None = 5.0,
    seed: int | None = None,
    disable_progbar: bool = True,
) -> BatchedFit:
    """Fit ``members`` copies of ``build()`` in one batched model (see the module).

    Options mean what they mean in :func:`~pyro_causalgen.infer.fit.fit`, per member:
    the loss is the sum over members of each one's weighted mean NLL of the batch
    (members share no parameter, so each gets its own gradient and Adam state);
    gradients are clipped to ``clip_norm * sqrt(members)`` jointly; early stopping
    watches the mean over members of their validation NLL (rows with weight 0:
    out-of-bag rows for ``"bootstrap"``, the held-out fold for ``"crossfit"``, a
    shared split of ``val_fraction`` otherwise) and restores the best epoch.

    :param build: returns an unfitted
        :class:`~pyro_causalgen.scm.StructuralCausalModel` (its config is repeated).
    :param method: one of :data:`WEIGHTINGS`.
    :param seed: seeds the weights, the batches and the initialisation (global RNG
        state is left alone).
    :returns: a :class:`BatchedFit`.
    :raises CausalModelError: if ``build()`` is not a ``StructuralCausalModel``.

    Example::

        >>> build = lambda: StructuralCausalModel({"x": [], "y": ["x"]},
        ...                                       mechanism="locscale")
        >>> x = torch.randn(200)
        >>> out = fit_batched(build, {"x": x, "y": 2 * x}, members=4, epochs=3,
        ...                   lr=0.05, seed=0)
        >>> len(out.members), len(out.history.train_loss)
        (4, 3)
    """
    if members < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {members}")
    gen = seeded_generator(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=gen)))
        template = build()
        if not isinstance(template, StructuralCausalModel):
            raise CausalModelError(
                "fit_batched repeats a StructuralCausalModel's graph; build() returned "
                f"{type(template).__name__} (use fit_ensemble for other models)"
            )
        device = next(iter(template.parameters())).device
        big = _expanded(template, members).to(device)
    names = list(template.order)
    tensors = prepare_model_data(template, data, (), {"n": 1})
    n_rows = next(iter(tensors.values())).shape[0]
    weights = row_weights(n_rows, members, method, val_fraction, gen)
    if bool((weights.sum(1) == 0).any()):
        raise DataError(f"{n_rows} rows are too few for {members} members")
    held = weights == 0
    expanded = {
        member_site(v, k): x for v, x in tensors.items() for k in range(members)
    }
    with torch.no_grad(), _Standardize():
        poutine.condition(big, data=expanded)(n=n_rows)
    score = _MemberLogProb(big, names, members)
    w_dev = weights.to(device)
    params = [p for p in big.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    clip = None if clip_norm is None else clip_norm * math.sqrt(members)
    history = FitHistory()
    best_state = copy.deepcopy(big.state_dict())
    best_members = torch.full((members,), math.nan)
    bad = 0
    for epoch in tqdm(range(epochs), disable=disable_progbar, desc="fit members"):
        big.train()
        total = torch.zeros(members, dtype=torch.float64)
        indexed = {**tensors, "__row": torch.arange(n_rows, device=device)}
        for rows, batch in shuffled_batches(indexed, batch_size, gen):
            idx = batch.pop("__row")
            lp = score(batch)  # (K, rows)
            w = w_dev[:, idx]
            per_member = -(w * lp).sum(1) / rows
            loss = per_member.sum()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(params, clip)
            optim.step()
            total += per_member.detach().double().cpu() * rows
            history.steps += 1
        history.train_loss.append((total / n_rows).mean().item())
        big.eval()
        val = _validation(score, tensors, held, batch_size * 8, device)
        current = val.nanmean().item() if bool(held.any()) else history.train_loss[-1]
        history.val_loss.append(current)
        best = history.best_val_loss
        if not math.isfinite(best) or current < best - 1e-6 * abs(best):
            history.best_val_loss, history.best_epoch = current, epoch
            best_state = copy.deepcopy(big.state_dict())
            best_members = val
            bad = 0
        else:
            bad += 1
            if patience is not None and bad >= patience:
                history.stopped_early = True
                break
    big.load_state_dict(best_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # build() draws an initialisation that is overwritten
        fitted = [_extract(build, big, names, k) for k in range(members)]
    return BatchedFit(fitted, weights, tensors, history, best_members)


@torch.no_grad()
def _validation(
    score: _MemberLogProb,
    tensors: Mapping[str, Tensor],
    held: Tensor,
    batch_size: int,
    device: torch.device,
) -> Tensor:
    """Each member's mean NLL over its held-out rows, ``(K,)`` (NaN if none)."""
    n = held.shape[1]
    total = torch.zeros(held.shape[0], dtype=torch.float64)
    mask = held.to(device)
    for start in range(0, n, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in tensors.items()}
        lp = score(batch)
        m = mask[:, start : start + batch_size]
        total += (-(lp * m).sum(1)).double().cpu()
    count = held.sum(1).double()
    return torch.where(count > 0, total / count.clamp(min=1), torch.nan)


__all__ = ["BatchedFit", "WEIGHTINGS", "fit_batched", "member_site", "row_weights"]
