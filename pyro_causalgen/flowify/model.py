"""``flowify``: turn an existing Pyro program into a causal generative model.

Rules, site by site (``deps`` below are the parents read by provenance tracking):

- **real, positive or unit-interval sites** with scalar or vector events become learned
  mechanisms ``x = f(u; deps)``: a flow on the reals, followed by ``exp`` for positive
  supports (``Gamma``, ``LogNormal``, ``Exponential``, ``HalfNormal``: non-negative
  counts as positive) and by ``sigmoid`` for the unit interval (``Beta``);
- **kept sites** (``keep=...``, or every site not in ``sites=...``) stay exactly as
  the program writes them, evaluated at the current parent values;
- **deterministic sites** (``pyro.deterministic``, ``Delta``) are functions of their
  parents with no noise: never learned, always recomputed by the program, and they
  count as parents of the sites that use them (so ``do`` on them propagates);
- **observed sites** (``obs=`` in the program) become mechanism sites like any other
  and are scored at their observed value; their value stays the observation (Pyro's
  semantics), so simulate them by calling the program without the observation;
- **discrete sites** with a Gumbel-max noise form (``Bernoulli``, ``Categorical``) are
  kept as written, with a :class:`FlowifyWarning` unless listed in ``keep``; other
  discrete sites (``Poisson``, ``Binomial``, ...) and sites with other supports
  (simplex, ``Uniform(a, b)``, ...) or events of more than one dim raise
  :class:`UnsupportedModelError` unless listed in ``keep``.

The parameters live in a :class:`FlowifiedModel` (an ``nn.Module``) that
:func:`~pyro_causalgen.infer.fit` fits and :meth:`FlowifiedModel.save_state` /
:meth:`FlowifiedModel.load_state` save and load.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pyro_causalgen.errors import CausalModelError, UnknownSiteError
from pyro_causalgen.flowify.dependencies import (
    SiteInfo,
    discover_structure,
    flow_support,
    has_gumbel_max,
)
from pyro_causalgen.flowify.errors import UnsupportedModelError
from pyro_causalgen.flowify.messenger import FlowifyMessenger
from pyro_causalgen.mechanisms import Mechanism, make_mechanism

_FORMAT = "pyro_causalgen.flowify/1"


class FlowifyWarning(UserWarning):
    """A site was left as the program wrote it by a rule, not by the user's choice.

    Example::

        >>> import warnings
        >>> def model(n=1):
        ...     with pyro.plate("units", n):
        ...         z = pyro.sample("z", dist.Bernoulli(0.3))
        ...         pyro.sample("y", dist.Normal(z, 1.0))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     fm = flowify(model, mechanism_kwargs={"hidden_features": (4,)})
        >>> [w.category.__name__ for w in caught], fm.kept_sites
        (['FlowifyWarning'], ['z'])
    """


def _module_key(name: str, taken: set[str]) -> str:
    key = re.sub(r"\W", "_", name) or "_"
    base, i = key, 1
    while key in taken:
        key, i = f"{base}_{i}", i + 1
    taken.add(key)
    return key


class FlowifiedModel(nn.Module):
    """A Pyro program whose chosen sample sites are learned mechanisms.

    Calling the model runs ``program(*args, **kwargs)`` under a
    :class:`~pyro_causalgen.flowify.messenger.FlowifyMessenger`, so it samples,
    scores, and composes with ``do``, ``pyro.condition``, traces and counterfactual
    handlers like the program itself, with the same site names, plates and shapes.
    Build it with :func:`flowify`.

    The program, when it is an ``nn.Module`` (e.g. a ``PyroModule``), is a submodule:
    it moves with ``.to(device)``, is part of ``state_dict``, and its parameters are
    fitted by :func:`~pyro_causalgen.infer.fit` where they reach a kept site (freeze
    them with ``model.program.requires_grad_(False)`` to keep them as written).

    :param program: the Pyro program.
    :param mechanisms: ``site -> mechanism``, the learned sites.
    :param structure: ``site -> SiteInfo`` from :func:`discover_structure`.

    Example::

        >>> def model(n=1):
        ...     with pyro.plate("units", n):
        ...         x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...         return pyro.sample("y", dist.Normal(2 * x, 1.0))
        >>> fm = flowify(model, flow="locscale")
        >>> fm.learned_sites, fm.parents["y"]
        (['x', 'y'], ('x',))
        >>> fm(n=5).shape
        torch.Size([5])
    """

    def __init__(
        self,
        program: Callable,
        mechanisms: Mapping[str, Mechanism],
        structure: Mapping[str, SiteInfo],
    ) -> None:
        super().__init__()
        self.program = program
        self.structure = dict(structure)
        taken: set[str] = set()
        self._keys = {site: _module_key(site, taken) for site in mechanisms}
        self.mechanisms = nn.ModuleDict(
            {self._keys[s]: m for s, m in mechanisms.items()}
        )

    # ----------------------------------------------------------- introspection
    @property
    def learned_sites(self) -> list[str]:
        """Sites evaluated by a learned mechanism, in program order."""
        return list(self._keys)

    @property
    def kept_sites(self) -> list[str]:
        """Stochastic sites left as the program writes them, in program order."""
        return [
            s
            for s, info in self.structure.items()
            if s not in self._keys and not info.deterministic
        ]

    @property
    def parents(self) -> dict[str, tuple[str, ...]]:
        """``site -> parent sites`` for every site (deterministic ones too)."""
        return {s: info.parents for s, info in self.structure.items()}

    def mechanism(self, site: str) -> Mechanism:
        """The learned mechanism of ``site``."""
        if site not in self._keys:
            raise UnknownSiteError(
                f"site '{site}' has no learned mechanism; learned sites are "
                f"{self.learned_sites}"
            )
        return self.mechanisms[self._keys[site]]  # type: ignore[return-value]

    def messenger(self) -> FlowifyMessenger:
        """A fresh messenger that evaluates the learned sites (see :meth:`forward`)."""
        mechs = {s: self.mechanism(s) for s in self._keys}
        det = {
            s: len(info.event_shape)
            for s, info in self.structure.items()
            if info.deterministic
        }
        return FlowifyMessenger(
            mechs, {s: self.structure[s].parents for s in mechs}, det
        )

    # ----------------------------------------------------------------- running
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the program with learned sites; returns what the program returns."""
        with self.messenger():
            return self.program(*args, **kwargs)

    # ------------------------------------------------------------- save / load
    def mechanism_configs(self) -> dict[str, dict[str, Any]]:
        """``site -> {"class", "config"}`` of every learned mechanism."""
        return {
            site: {
                "class": type(self.mechanism(site)).__name__,
                "config": dict(self.mechanism(site).config),
            }
            for site in self._keys
        }

    def save_state(self, path: str | os.PathLike) -> None:
        """Save the learned state (weights, standardisation, program parameters).

        The program itself is code and is not saved: rebuild the model with the same
        :func:`flowify` call and :meth:`load_state` into it; outputs are then
        bit-identical. (:func:`pyro_causalgen.save` needs a model that can be rebuilt
        from its constructor arguments, which a wrapped program cannot.)
        """
        torch.save(
            {
                "format": _FORMAT,
                "mechanisms": self.mechanism_configs(),
                "state_dict": {
                    k: v.detach().cpu() for k, v in self.state_dict().items()
                },
            },
            path,
        )

    def load_state(self, path: str | os.PathLike) -> FlowifiedModel:
        """Load a state saved by :meth:`save_state` (onto this model's device).

        :raises CausalModelError: naming the site, when the saved mechanisms differ
            from this model's (other sites, parents, shapes or flow options).
        """
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
            raise CausalModelError(f"{path} is not a flowified-model state file")
        saved, mine = blob["mechanisms"], self.mechanism_configs()
        for site in sorted(set(saved) | set(mine)):
            if site not in mine or site not in saved:
                where = "the file" if site not in saved else "this model"
                raise CausalModelError(
                    f"site '{site}' has a learned mechanism in only one of this model "
                    f"and {path} (missing from {where})"
                )
            if _normal(saved[site]) != _normal(mine[site]):
                raise CausalModelError(
                    f"site '{site}': the saved mechanism {saved[site]} differs from "
                    f"this model's {mine[site]}"
                )
        self.load_state_dict(blob["state_dict"], strict=True)
        return self


def _normal(x: Any) -> Any:
    """Tuples and lists compare equal after a save / load round trip."""
    if isinstance(x, Mapping):
        return {k: _normal(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return tuple(_normal(v) for v in x)
    return x


def _as_names(sites: str | Iterable[str] | None) -> list[str] | None:
    if sites is None:
        return None
    return [sites] if isinstance(sites, str) else list(sites)


def _unsupported_reason(info: SiteInfo) -> str | None:
    """Why a site cannot become a flow mechanism (``None`` when it can)."""
    fn = info.fn
    if fn.support.is_discrete:
        kind = type(fn).__name__
        if has_gumbel_max(fn):
            return f"discrete ({kind}); it has a Gumbel-max form, so keeping it is safe"
        return (
            f"discrete ({kind}) without a Gumbel-max noise representation, so its "
            "noise cannot be shared across worlds"
        )
    if len(info.event_shape) > 1:
        return f"event shape {info.event_shape} has more than one dim"
    if flow_support(fn) is None:
        return f"support {fn.support} is not real, positive or the unit interval"
    return None


def choose_sites(
    structure: Mapping[str, SiteInfo],
    sites: str | Iterable[str] | None = None,
    keep: str | Iterable[str] = (),
) -> list[str]:
    """Apply the site rules (see the module docstring) and return the learned sites.

    :raises UnknownSiteError: for names that are not stochastic sites of the program.
    :raises UnsupportedModelError: naming each site that cannot be learned and was
        neither kept nor left out of ``sites``.

    Example::

        >>> def model():
        ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     pyro.sample("y", dist.Normal(x, 1.0))
        >>> choose_sites(discover_structure(model), keep="y")
        ['x']
    """
    stochastic = [s for s, i in structure.items() if not i.deterministic]
    chosen, kept = _as_names(sites), _as_names(keep) or []
    for label, names in (("sites", chosen or []), ("keep", kept)):
        bad = [n for n in names if n not in stochastic]
        if bad:
            det = [n for n in bad if n in structure]
            hint = f"; {det} are deterministic and never learned" if det else ""
            raise UnknownSiteError(
                f"flowify({label}=...): {bad} are not stochastic sample sites of the "
                f"program; its sites are {stochastic}{hint}"
            )
    both = sorted(set(chosen or []) & set(kept))
    if both:
        raise CausalModelError(f"flowify(): site(s) {both} are both in sites and keep")
    candidates = [
        s for s in stochastic if (chosen is None or s in chosen) and s not in kept
    ]
    learned, errors, notes = [], [], []
    for site in candidates:
        reason = _unsupported_reason(structure[site])
        if reason is None:
            learned.append(site)
        elif chosen is None and has_gumbel_max(structure[site].fn):
            notes.append(site)
        else:
            errors.append(f"site '{site}': {reason}")
    if errors:
        raise UnsupportedModelError(
            "flowify(): cannot learn a flow mechanism at "
            + "; ".join(errors)
            + ". Keep such sites as written with keep=[...] (interventions and "
            "fitting then work; counterfactuals need a noise form)"
        )
    if notes:
        warnings.warn(
            f"flowify(): discrete site(s) {notes} are kept as the program writes them "
            "(Gumbel-max mechanisms); pass keep=[...] to silence this",
            FlowifyWarning,
            stacklevel=3,
        )
    return learned


def flowify(
    model: Callable,
    sites: str | Iterable[str] | None = None,
    *,
    keep: str | Iterable[str] = (),
    flow: str | Mapping[str, str] = "nsf",
    mechanism_kwargs: Mapping[str, Any] | None = None,
    model_args: Sequence = (),
    model_kwargs: Mapping[str, Any] | None = None,
    trials: int = 3,
    seed: int | None = None,
) -> FlowifiedModel:
    """Wrap a Pyro program so that its sample sites become learned flow mechanisms.

    The program is run ``trials`` times (with ``model_args`` / ``model_kwargs``, in a
    forked RNG) to read each site's parents by provenance tracking and to check that
    the structure does not depend on the draws. Each learned site gets a mechanism
    whose context is its parents' values (flattened; discrete parents enter as
    numbers), whose event shape is the site's, and whose support follows the rules of
    :mod:`pyro_causalgen.flowify.model`. Mechanisms start untrained: fit them with
    :func:`~pyro_causalgen.infer.fit`.

    :param model: a Pyro program (function or ``nn.Module`` / ``PyroModule``).
    :param sites: the sites to learn (default: every site the rules allow); the
        others stay as written.
    :param keep: sites to leave as written (their counterfactuals use their own noise
        form, e.g. a ``Normal``'s ``(x - loc) / scale``).
    :param flow: ``"nsf"``, ``"maf"`` or ``"locscale"``, or a mapping ``site -> kind``
        (sites missing from it get ``"nsf"``).
    :param mechanism_kwargs: keyword arguments for every mechanism (e.g.
        ``{"hidden_features": (32, 32), "transforms": 2}``), or a mapping
        ``site -> kwargs`` when every key is a learned site.
    :param model_args: positional arguments of the trial runs.
    :param model_kwargs: keyword arguments of the trial runs (e.g. ``{"n": 8}``).
    :param trials: number of trial runs compared.
    :param seed: seed of the trial runs (the global RNG is not touched).
    :returns: a :class:`FlowifiedModel`.
    :raises UnsupportedModelError: naming the site, for control flow on sampled
        values, parent sets that change between runs, dependencies across plates and
        sites without a flow or Gumbel-max representation that are not kept.
    :raises UnknownSiteError: for names in ``sites`` / ``keep`` that the program
        does not sample.

    Example::

        >>> def model(n=1):
        ...     with pyro.plate("units", n):
        ...         x = pyro.sample("x", dist.Normal(0.0, 1.0))
        ...         w = pyro.sample("w", dist.LogNormal(x, 0.5))
        ...         return pyro.sample("y", dist.Normal(x + w, 1.0))
        >>> fm = flowify(model, keep=["y"], mechanism_kwargs={"hidden_features": (8,)})
        >>> fm.learned_sites, fm.kept_sites, fm.mechanism("w").support
        (['x', 'w'], ['y'], 'positive')
    """
    structure = discover_structure(model, model_args, model_kwargs, trials, seed)
    learned = choose_sites(structure, sites, keep)
    kwargs_by_site = _per_site(mechanism_kwargs, learned, "mechanism_kwargs")
    mechanisms: dict[str, Mechanism] = {}
    for site in learned:
        info = structure[site]
        kind = flow.get(site, "nsf") if isinstance(flow, Mapping) else flow
        parents = {p: structure[p].event_shape for p in info.parents}
        mechanisms[site] = make_mechanism(
            kind,
            event_shape=info.event_shape,
            parents=parents,
            name=site,
            support=flow_support(info.fn),
            **kwargs_by_site.get(site, {}),
        )
    if isinstance(flow, Mapping):
        extra = sorted(set(flow) - set(learned))
        if extra:
            raise UnknownSiteError(
                f"flowify(flow=...): {extra} are not learned sites ({learned})"
            )
    return FlowifiedModel(model, mechanisms, structure)


def _per_site(
    kwargs: Mapping[str, Any] | None, learned: list[str], label: str
) -> dict[str, dict[str, Any]]:
    if not kwargs:
        return {}
    if all(k in learned for k in kwargs) and all(
        isinstance(v, Mapping) for v in kwargs.values()
    ):
        return {k: dict(v) for k, v in kwargs.items()}
    return {site: dict(kwargs) for site in learned}
