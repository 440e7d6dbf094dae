"""Read the causal graph of a Pyro program.

The program is run once under provenance tracking (:mod:`pyro.ops.provenance`, the
machinery behind :func:`pyro.infer.inspect.get_dependencies`): every sample site's
value is tagged with the site's name, so the sites a site depends on directly are
the tags that reach its ``log_prob`` (or, for a ``pyro.deterministic`` site, its
value).  Unlike ``get_dependencies`` this keeps deterministic sites and the
dependencies of observed sites.  Sites the user does not observe are projected out
(latent projection), which turns shared unobserved causes into bidirected edges.

Exogenous noise sites created by our counterfactual reparameterisation carry
``msg["infer"]["causalgen_noise"] = True``; they are never variables of the graph
(they are projected out like any other latent site).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.ops.provenance import ProvenanceTensor, detach_provenance, get_provenance
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_causalgen.errors import UnknownSiteError
from pyro_causalgen.graph.admg import ADMG

NOISE_KEY = "causalgen_noise"


@dataclass(frozen=True)
class ModelDependencies:
    """Sample sites of a program and their direct dependencies.

    :ivar sites: variable sites in program order (noise sites excluded).
    :ivar parents: for every site (noise sites included) the sites it reads.
    :ivar noise: names of exogenous noise sites (``infer["causalgen_noise"]``).
    :ivar observed_in_trace: sites that were observed (``obs=``) in the run.
    :ivar plates: for every site the names of the plates it sits in.

    >>> import pyro, pyro.distributions as dist
    >>> def model():
    ...     x = pyro.sample("x", dist.Normal(0.0, 1.0))
    ...     pyro.sample("y", dist.Normal(x, 1.0))
    >>> model_dependencies(model).parents["y"]
    ('x',)
    """

    sites: tuple[str, ...]
    parents: Mapping[str, tuple[str, ...]]
    noise: frozenset[str] = frozenset()
    observed_in_trace: frozenset[str] = frozenset()
    plates: Mapping[str, frozenset[str]] = field(default_factory=dict)


class _TagSites(Messenger):
    """Tag every sample-site value with the site's name; record direct parents."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        self.parents: dict[str, frozenset[str]] = {}
        self.noise: set[str] = set()
        self.observed: set[str] = set()
        self.plates: dict[str, frozenset[str]] = {}

    def _pyro_post_sample(self, msg: dict) -> None:
        if msg["type"] != "sample" or msg["infer"].get("is_auxiliary"):
            return
        if msg["infer"].get("_do_not_trace") or site_is_subsample(msg):
            return
        name = msg["name"]
        infer = msg["infer"]
        if infer.get("_deterministic", False):
            deps = get_provenance(msg["value"])
        else:
            fn = msg["fn"]
            while isinstance(fn, MaskedDistribution):
                fn = fn.base_dist
            try:
                deps = get_provenance(fn.log_prob(msg["value"]))
            except Exception:  # noqa: BLE001 - e.g. a value outside the support
                deps = frozenset()
                for v in vars(fn).values():
                    if isinstance(v, torch.Tensor):
                        deps = deps | get_provenance(v)
        self.order.append(name)
        self.parents[name] = frozenset(deps) - {name}
        if infer.get(NOISE_KEY, False):
            self.noise.add(name)
        if msg["is_observed"] and not infer.get("_deterministic", False):
            self.observed.add(name)
        self.plates[name] = frozenset(
            f.name for f in msg["cond_indep_stack"] if f.vectorized
        )
        msg["value"] = ProvenanceTensor(
            detach_provenance(msg["value"]), frozenset({name})
        )


def model_dependencies(
    model: Callable[..., Any],
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
) -> ModelDependencies:
    """Run ``model`` once and return its sample sites and direct dependencies.

    The run uses a forked RNG and no gradients, so it changes no global state.

    :param model: a Pyro program.
    :param model_args: positional arguments for the run.
    :param model_kwargs: keyword arguments for the run.
    :returns: the sites and, for each, the sites it reads directly.

    >>> import pyro, pyro.distributions as dist
    >>> def model():
    ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
    ...     x = pyro.deterministic("x", 2 * z)
    ...     pyro.sample("y", dist.Normal(x + z, 1.0))
    >>> deps = model_dependencies(model)
    >>> deps.sites, sorted(deps.parents["y"])
    (('z', 'x', 'y'), ['x', 'z'])
    """
    kwargs = dict(model_kwargs or {})
    tagger = _TagSites()
    with torch.random.fork_rng(), torch.no_grad(), pyro.validation_enabled(False):
        with tagger:
            model(*model_args, **kwargs)
    known = set(tagger.order)
    parents = {
        n: tuple(p for p in tagger.order if p in tagger.parents[n] and p in known)
        for n in tagger.order
    }
    sites = tuple(n for n in tagger.order if n not in tagger.noise)
    return ModelDependencies(
        sites=sites,
        parents=parents,
        noise=frozenset(tagger.noise),
        observed_in_trace=frozenset(tagger.observed),
        plates=dict(tagger.plates),
    )


def _names_from_data(data: Any) -> list[str]:
    if hasattr(data, "columns"):
        return [str(c) for c in data.columns if str(c) != "weight"]
    if isinstance(data, Mapping):
        return [str(k) for k in data.keys() if str(k) != "weight"]
    raise TypeError(
        f"data must be a mapping or a DataFrame of observations, got {type(data)!r}"
    )


def extract_graph(
    model: Callable[..., Any],
    observed: Iterable[str] | None = None,
    *,
    data: Any = None,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
) -> ADMG:
    """The ADMG over the observed sites of a Pyro program.

    Every sample site (``pyro.deterministic`` sites included) is a variable,
    except noise sites marked ``infer={"causalgen_noise": True}``.  The observed
    variables are ``observed``, or the columns of ``data`` (a ``weight`` column is
    ignored); if neither is given, every variable is observed.  Unobserved
    variables and noise sites are removed by latent projection
    (:meth:`ADMG.latent_projection`), so an unobserved common cause becomes a
    bidirected edge.  Plates index i.i.d. units: a site in a plate is one
    variable, and a global unobserved site read inside a plate becomes a
    confounder of the sites that read it.

    :param model: a Pyro program.
    :param observed: names of observed sites.
    :param data: observations whose keys (or DataFrame columns) are the observed
        sites; used when ``observed`` is not given.
    :param model_args: positional arguments to run the program with.
    :param model_kwargs: keyword arguments to run the program with.
    :returns: the projected graph, nodes in program order.
    :raises UnknownSiteError: if an observed name is not a variable of the program
        (noise sites are not variables).

    >>> import pyro, pyro.distributions as dist
    >>> def model():
    ...     u = pyro.sample("u", dist.Normal(0.0, 1.0))
    ...     x = pyro.sample("x", dist.Normal(u, 1.0))
    ...     pyro.sample("y", dist.Normal(x + u, 1.0))
    >>> print(extract_graph(model, observed=["x", "y"]))
    x -> y; x <-> y
    """
    deps = model_dependencies(model, model_args, model_kwargs)
    if observed is None and data is not None:
        observed = _names_from_data(data)
    if observed is None:
        obs = list(deps.sites)
    else:
        obs = [observed] if isinstance(observed, str) else list(observed)
        for name in obs:
            if name in deps.noise:
                raise UnknownSiteError(
                    f"site {name!r} is an exogenous noise site "
                    "(infer['causalgen_noise']), not a variable; it cannot be observed"
                )
            if name not in deps.parents:
                raise UnknownSiteError(
                    f"unknown site {name!r}; the program has sample sites "
                    f"{', '.join(deps.sites)}"
                )
    all_sites = list(deps.parents)
    edges = [(p, c) for c in all_sites for p in deps.parents[c]]
    full = ADMG(edges, (), all_sites)
    keep = set(obs)
    latent = [s for s in all_sites if s not in keep]
    return full.latent_projection(latent) if latent else full


__all__ = ["ModelDependencies", "extract_graph", "model_dependencies"]
