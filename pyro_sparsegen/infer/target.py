"""A Pyro model as the core's density: site layout, transforms, plates, blocks.

:class:`ModelTarget` traces the model once (under a forked RNG, so building a target leaves
the global RNG alone) and fixes, as Pyro's HMC does, each latent site's transform
``biject_to(support)``; the kernel moves in the unconstrained space and every site's
``log |det J|`` joins its log density. The chain plate (one chain per element, e.g. per image)
is the plate given as ``chain_plate`` or, by default, the plate holding the most latent
coordinates such that no site outside it depends on the latents inside it. Latent sites inside
it form each chain's block (``position: [*R, N, D]``, every batch dim the site has, declared
by a plate or not, flattened into ``D``); latent sites outside it form the global block
(``glob: [*R, G]``). A model without such a plate is one chain (``N = 1``).

The density is evaluated by running the model itself under one light effect handler
(:class:`_Evaluate`) that substitutes the latent values and collects every sample site's
``log_prob`` (scaled and masked as Pyro does); nothing of the model is written twice.
"""

import contextlib
import math
from typing import NamedTuple, Optional

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, constraints

from ..distributions import base_distribution, isotropic_normal_log_prob
from ..runtime import forked_rng
from .core import Density

_NORMALS = (torch.distributions.Normal, pyro.distributions.Normal)
Independent = torch.distributions.Independent


class _Site(NamedTuple):
    name: str
    local: bool  # in the chain plate (each chain's block) or global
    shape: torch.Size  # constrained value shape (no replica dims)
    event_dim: int
    transform: object  # constrained -> unconstrained is transform.inv
    identity: bool
    free_shape: torch.Size  # unconstrained value shape
    ldj_event_dim: int  # event dims of log|det J| left to sum
    chain_dim: Optional[int]  # dim of the unconstrained value that is the chain plate
    size: int  # numel per chain (local) or in all (global)
    offset: int  # start in its block
    mixture: bool  # zero-centred scale mixture: semi-implicit step, crossing move
    crossing: bool  # the mixture exposes its component scales


def _is_identity(transform):
    while isinstance(transform, torch.distributions.transforms.IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, torch.distributions.transforms.ComposeTransform) and \
        not transform.parts


def is_scale_mixture(fn):
    """Whether a site's distribution declares itself a zero-centred scale mixture
    (``scale_mixture = True``, as :class:`~pyro_sparsegen.SpikeAndSlab`)."""
    return bool(getattr(base_distribution(fn), "scale_mixture", False))


def _plates(msg):
    return {f.name: f for f in msg["cond_indep_stack"] if f.vectorized}


class _Evaluate(Messenger):
    """Substitutes the latent sites' values and keeps every sample site's message."""

    def __init__(self, values):
        super().__init__()
        self.values = values
        self.sites = []

    def _pyro_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg):
            return
        value = self.values.get(msg["name"])
        if value is None:
            raise ValueError(f"latent site {msg['name']!r} was not in the model's first trace; "
                             "ShortRunLangevin needs a model whose sites do not change between "
                             "calls")
        msg["value"] = value
        msg["done"] = True

    def _pyro_post_sample(self, msg):
        if not site_is_subsample(msg) and not msg["infer"].get("_deterministic"):
            self.sites.append(msg)


def _log_prob(msg):
    fn, value = msg["fn"], msg["value"]
    out = _normal_log_prob(fn, value)
    return scale_and_mask(fn.log_prob(value) if out is None else out, msg["scale"],
                          msg["mask"])


def _normal_log_prob(fn, value):
    """A ``Normal`` (under ``Independent``) with one scale for every element and no gradient
    to it, the usual image likelihood: the same density with a one-operation gradient
    (:func:`~pyro_sparsegen.distributions.isotropic_normal_log_prob`); ``None`` otherwise."""
    dims = 0
    while isinstance(fn, Independent):
        dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    if type(fn) not in _NORMALS or fn.scale.requires_grad:
        return None
    scale = fn.scale
    if scale.numel() != 1 and any(stride != 0 for stride in scale.stride()):
        return None  # one value broadcast (stride 0), not a tensor of scales
    return isotropic_normal_log_prob(value, fn.loc, scale[(0,) * scale.dim()], dims)


def _secant_curvature(fn, value, eps=1e-6):
    """``max(-d/dz log p(z) / z, 0)`` elementwise: the distribution's closed form
    ``secant_curvature`` when it has one, else by autograd; exact zeros use ``z = eps``."""
    base = base_distribution(fn)
    value = value.detach()
    closed = getattr(base, "secant_curvature", None)
    if closed is not None:
        return closed(value).expand(value.shape)
    z = torch.where(value.abs() < eps, torch.full_like(value, eps), value)
    with torch.enable_grad():
        z = z.requires_grad_(True)
        (grad,) = torch.autograd.grad(base.log_prob(z).sum(), z)
    return (-grad / z.detach()).clamp(min=0.0).nan_to_num(nan=0.0, posinf=1e30)


def _log_scale_ratio(fn, value):
    spike, slab = base_distribution(fn).component_scales()
    return (slab.log() - spike.log()).expand(value.shape)


class ModelTarget:
    """The log density of a Pyro model's latent sites, per element of its chain plate.

    :param model: a Pyro model.
    :param args, kwargs: the model's arguments.
    :param chain_plate: the plate whose elements are independent chains (default: found).
    :param int replicas: replica chains as a leading dim (0: none).
    """

    def __init__(self, model, args, kwargs, chain_plate=None, replicas=0):
        self.model, self.args, self.kwargs = model, args, kwargs
        self.replicas = int(replicas)
        with forked_rng(model, args, kwargs):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        latent, observed = [], []
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site) or \
                    site["infer"].get("_deterministic"):
                continue
            (observed if site["is_observed"] else latent).append(site)
        if not latent:
            raise ValueError("the model has no latent sample site to infer")
        for site in latent:
            _check_continuous(site)
        everything = latent + observed
        self.batch_rank = max([len(s["fn"].batch_shape) for s in everything]
                              + [s["value"].dim() - s["fn"].event_dim for s in everything]
                              + [-f.dim for s in everything for f in s["cond_indep_stack"]
                                 if f.vectorized] + [0])
        self._replica_dim = -(self.batch_rank + 1)
        self.rank = self.batch_rank + (1 if self.replicas else 0)
        first = latent[0]["value"]
        self.dtype = first.dtype if first.is_floating_point() else torch.get_default_dtype()
        self.device = first.device
        depends = _dependencies(model, args, kwargs, latent)
        self.plate, self.num_chains, self.plate_dim = _choose_plate(latent, everything, depends,
                                                                    chain_plate)
        self._chain_index = None if self.plate is None else self.rank + self.plate_dim
        self.sites = self._layout(latent)
        self.names = [s.name for s in self.sites]
        self.local_sites = [s for s in self.sites if s.local]
        self.global_sites = [s for s in self.sites if not s.local]
        self.local_size = sum(s.size for s in self.local_sites)
        self.global_size = sum(s.size for s in self.global_sites)
        only = self.local_sites[0] if len(self.local_sites) == 1 else None
        self._whole = only is not None and only.chain_dim == 0 and \
            tuple(only.free_shape) == (self.num_chains, only.size)
        self.transforms = {s.name: s.transform.inv for s in self.sites}
        self.has_curvature = any(s.mixture for s in self.sites)
        index = [s.offset + i for s in self.local_sites if s.crossing for i in range(s.size)]
        self.mixture_index = torch.tensor(index, dtype=torch.long, device=self.device)
        self._local_names = {s.name for s in self.local_sites}

    # -- layout --
    def _layout(self, latent):
        sites, offsets = [], {True: 0, False: 0}
        for site in latent:
            fn, value = site["fn"], site["value"]
            transform = biject_to(fn.support)
            free = transform.inv(value)
            batch = value.dim() - fn.event_dim
            local = self.plate is not None and self.plate in _plates(site)
            chain_dim = batch + self.plate_dim if local else None
            n = self.num_chains if local else 1
            mixture = is_scale_mixture(fn) and _is_identity(transform)
            crossing = mixture and hasattr(base_distribution(fn), "component_scales")
            size = free.numel() // n
            sites.append(_Site(site["name"], local or self.plate is None, value.shape,
                               fn.event_dim, transform, _is_identity(transform), free.shape,
                               fn.event_dim - transform.codomain.event_dim, chain_dim, size,
                               offsets[local or self.plate is None], mixture, crossing))
            offsets[local or self.plate is None] += size
        return sites

    def _lead(self, tensor, block_rank):
        return tuple(tensor.shape[:tensor.dim() - block_rank])

    def unpack_free(self, position, glob):
        """``{site: unconstrained value [*R, *free_shape]}`` from the two blocks."""
        out = {}
        lead = self._lead(position, 2)
        if self._whole:
            out[self.local_sites[0].name] = position
        else:
            for s in self.local_sites:
                flat = position[..., s.offset:s.offset + s.size]
                if s.chain_dim is None:  # no chain plate: one chain
                    out[s.name] = flat.reshape(lead + tuple(s.free_shape))
                    continue
                rest = s.free_shape[:s.chain_dim] + s.free_shape[s.chain_dim + 1:]
                v = flat.reshape(lead + (self.num_chains,) + tuple(rest))
                out[s.name] = v.movedim(len(lead), len(lead) + s.chain_dim)
        for s in self.global_sites:
            out[s.name] = glob[..., s.offset:s.offset + s.size].reshape(
                lead + tuple(s.free_shape))
        return out

    def pack_free(self, free, replicas=None):
        """``(position [*R, N, D], glob [*R, G])`` from unconstrained values ``[*R, *free]``."""
        r = self.replicas if replicas is None else replicas
        parts_local, parts_global = [], []
        for s in self.sites:
            v = free[s.name]
            lead = tuple(v.shape[:v.dim() - len(s.free_shape)])
            if len(lead) != (1 if r else 0):
                raise ValueError(f"site {s.name!r}: expected a value of shape "
                                 f"{[r] if r else []}+{list(s.free_shape)}, got {list(v.shape)}")
            if s.local and s.chain_dim is not None:
                v = v.movedim(len(lead) + s.chain_dim, len(lead))
                parts_local.append(v.reshape(lead + (self.num_chains, s.size)))
            elif s.local:
                parts_local.append(v.reshape(lead + (1, s.size)))
            else:
                parts_global.append(v.reshape(lead + (s.size,)))
        position = parts_local[0] if len(parts_local) == 1 else torch.cat(parts_local, -1)
        lead = tuple(position.shape[:-2])
        glob = torch.cat(parts_global, -1) if parts_global else position.new_zeros(lead + (0,))
        return position.to(self.dtype), glob.to(self.dtype)

    def constrain(self, free):
        """Constrained values from unconstrained ones (same leading dims)."""
        return {s.name: free[s.name] if s.identity else s.transform(free[s.name])
                for s in self.sites}

    def unconstrain(self, values):
        return {s.name: values[s.name] if s.identity else s.transform.inv(values[s.name])
                for s in self.sites}

    def values(self, position, glob):
        """Constrained values ``{site: [*R, *shape]}`` at a position."""
        return self.constrain(self.unpack_free(position, glob))

    # -- running the model --
    def _run(self, values, args, kwargs):
        """Run the model with ``values`` substituted (``[*R, *shape]``); return its sites."""
        if self.replicas:
            values = {name: self._pad(name, v) for name, v in values.items()}
        with _Evaluate(values) as ev, _replicated(self.replicas, self._replica_dim):
            self.model(*args, **kwargs)
        return ev.sites

    def _pad(self, name, value):
        """``[R, *shape] -> [R, 1, ..., 1, *shape]`` for the replica plate at the left."""
        site = next(s for s in self.sites if s.name == name)
        batch = len(site.shape) - site.event_dim
        return value.reshape(value.shape[:1] + (1,) * (self.batch_rank - batch) + site.shape)

    def _per_chain(self, term, local):
        """``[*R, N]`` (local) or ``[*R]`` (shared) sums of a site's term."""
        if not isinstance(term, torch.Tensor):
            term = torch.as_tensor(term, dtype=self.dtype, device=self.device)
        if term.dim() < self.rank:
            term = term.reshape((1,) * (self.rank - term.dim()) + tuple(term.shape))
        keep = [0] if self.replicas else []
        if local and self._chain_index is not None:
            keep.append(self._chain_index)
        drop = tuple(d for d in range(self.rank) if d not in keep)
        out = term.sum(drop) if drop else term
        shape = (self.replicas,) if self.replicas else ()
        if local:
            shape = shape + (self.num_chains,)
            if self._chain_index is None:
                out = out.unsqueeze(-1)
        return out if out.shape == shape else out.expand(shape)

    def in_chain_plate(self, msg):
        """Whether a site message belongs to the chain plate (its terms are per chain)."""
        if self.plate is None:
            return True
        if msg["name"] in self._local_names:
            return True
        return any(f.name == self.plate for f in msg["cond_indep_stack"])

    def terms(self, values, args=None, kwargs=None, jacobians=None):
        """``(local [*R, N], shared [*R], observed [*R, N], sites)`` of the model's log joint at
        constrained ``values``; ``jacobians`` (``{site: log|det J|}``) join their sites."""
        args = self.args if args is None else args
        kwargs = self.kwargs if kwargs is None else kwargs
        msgs = self._run(values, args, kwargs)
        local = shared = observed = None

        def add(total, part):
            return part if total is None else total + part

        for msg in msgs:
            term = _log_prob(msg)
            if jacobians is not None and msg["name"] in jacobians:
                term = term + jacobians[msg["name"]]
            in_plate = self.in_chain_plate(msg)
            part = self._per_chain(term, in_plate)
            if in_plate:
                local = add(local, part)
                if msg["is_observed"]:
                    observed = add(observed, part)
            else:
                shared = add(shared, part)
        lead = (self.replicas,) if self.replicas else ()
        zeros = torch.zeros(lead + (self.num_chains,), dtype=self.dtype, device=self.device)
        local = zeros if local is None else local
        observed = torch.zeros_like(local) if observed is None else observed
        shared = zeros.sum(-1) if shared is None else shared
        return local, shared, observed, msgs

    def _jacobians(self, free, values):
        """``{site: log|det J|}`` of the constrained sites, shaped as their log densities."""
        out = {}
        for s in self.sites:
            if s.identity:
                continue
            ldj = s.transform.log_abs_det_jacobian(free[s.name], values[s.name])
            if s.ldj_event_dim:
                ldj = ldj.sum(tuple(range(-s.ldj_event_dim, 0)))
            if self.replicas:
                batch = ldj.shape[1:]
                ldj = ldj.reshape(ldj.shape[:1] + (1,) * (self.batch_rank - len(batch)) + batch)
            out[s.name] = ldj
        return out

    def density(self, position, glob, args=None, kwargs=None, *, curvature=False,
                crossing=False):
        """:class:`~pyro_sparsegen.infer.core.Density` at ``position`` / ``glob``: the model's
        log joint with the transforms' Jacobians, its gradient, and (``curvature``,
        ``crossing``) what the semi-implicit step and the crossing move need."""
        with torch.enable_grad():
            position = position.detach().requires_grad_(True)
            glob = glob.detach().requires_grad_(self.global_size > 0)
            free = self.unpack_free(position, glob)
            values = self.constrain(free)
            local, shared, observed, msgs = self.terms(values, args, kwargs,
                                                       self._jacobians(free, values))
            inputs = [position, glob] if self.global_size else [position]
            grads = torch.autograd.grad(local.sum() + shared.sum(), inputs, allow_unused=True)
        grad = _zero_if_none(grads[0], position)
        grad_global = _zero_if_none(grads[1], glob) if self.global_size else \
            glob.detach()
        kappa = kappa_global = ratio = None
        if (curvature and self.has_curvature) or (crossing and self.mixture_index.numel()):
            by_name = {msg["name"]: msg for msg in msgs}
            if curvature and self.has_curvature:
                kappa, kappa_global = self._mixture_arrays(by_name, _secant_curvature,
                                                           lambda s: s.mixture)
            if crossing and self.mixture_index.numel():
                ratio, _ = self._mixture_arrays(by_name, _log_scale_ratio,
                                                lambda s: s.crossing and s.local)
        return Density(local.detach(), shared.detach(), observed.detach(), grad, grad_global,
                       kappa, kappa_global, ratio)

    def _mixture_arrays(self, msgs, fn, wanted):
        """``fn(site distribution, value)`` of the sites ``wanted(site)`` picks, 0 elsewhere,
        in the blocks' layout: ``(local [*R, N, D], global [*R, G] or None)``."""
        lead = (self.replicas,) if self.replicas else ()
        arrays = {}
        for s in self.sites:
            if wanted(s):
                msg = msgs[s.name]
                a = fn(msg["fn"], msg["value"]).detach().reshape(lead + tuple(s.shape))
            else:
                a = torch.zeros(lead + tuple(s.free_shape), dtype=self.dtype, device=self.device)
            arrays[s.name] = a
        local, glob = self.pack_free(arrays)
        return local, (glob if any(wanted(s) for s in self.global_sites) else None)

    # -- starts --
    def prior_free(self, args=None, kwargs=None):
        """A draw of every latent site from the model (prior draws), unconstrained, packed.
        (Consumes the global RNG, as sampling should.)"""
        args = self.args if args is None else args
        kwargs = self.kwargs if kwargs is None else kwargs
        with _replicated(self.replicas, self._replica_dim):
            trace = poutine.trace(self.model).get_trace(*args, **kwargs)
        values = {}
        for s in self.sites:
            v = trace.nodes[s.name]["value"].detach()
            if self.replicas:
                v = v.reshape((self.replicas,) + tuple(s.shape))
            values[s.name] = v
        return self.pack_free(self.unconstrain(values))

    def zeros(self):
        lead = (self.replicas,) if self.replicas else ()
        return (torch.zeros(lead + (self.num_chains, self.local_size), dtype=self.dtype,
                            device=self.device),
                torch.zeros(lead + (self.global_size,), dtype=self.dtype, device=self.device))


def _zero_if_none(grad, like):
    return torch.zeros_like(like) if grad is None else grad


@contextlib.contextmanager
def _replicated(replicas, dim):
    if not replicas:
        yield
        return
    with pyro.plate("_replicas", replicas, dim=dim):
        yield


def _check_continuous(site):
    name, fn = site["name"], site["fn"]
    if site["infer"].get("enumerate") or fn.support.is_discrete:
        raise ValueError(
            f"latent site {name!r} is discrete ({type(fn).__name__}); ShortRunLangevin needs "
            "continuous latents: marginalise the discrete part analytically (as SpikeAndSlab "
            "marginalises its gate)")
    try:
        biject_to(fn.support)
    except NotImplementedError:
        raise ValueError(f"latent site {name!r} has support {fn.support}, which has no "
                         "bijection to the real numbers") from None


def _support_tensors(constraint):
    out = []
    for value in vars(constraint).values():
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif isinstance(value, constraints.Constraint):
            out.extend(_support_tensors(value))
    return out


def _dependencies(model, args, kwargs, latent):
    """``{site: set of latent sites its log density depends on}`` (autograd connectivity at
    the first trace's values); refuses supports that depend on another latent."""
    leaves = {s["name"]: s["value"].detach().clone().requires_grad_(
        s["value"].is_floating_point()) for s in latent}
    names = list(leaves)
    with forked_rng(model, args, kwargs), torch.enable_grad(), pyro.validation_enabled(False):
        with _Evaluate(leaves) as ev:
            model(*args, **kwargs)
        inputs = [leaves[n] for n in names]
        out = {}
        for msg in ev.sites:
            term = _log_prob(msg)
            out[msg["name"]] = _connected(term, inputs, names)
            if not msg["is_observed"]:
                for bound in _support_tensors(msg["fn"].support):
                    if _connected(bound, inputs, names) - {msg["name"]}:
                        raise ValueError(
                            f"latent site {msg['name']!r} has a support that depends on "
                            f"another latent site ({msg['fn'].support}); ShortRunLangevin "
                            "fixes each site's transform from the first trace, as Pyro's HMC "
                            "does: reparametrise the site (e.g. sample a unit-interval "
                            "fraction and scale it)")
    return out


def _connected(tensor, inputs, names):
    if not isinstance(tensor, torch.Tensor) or not tensor.requires_grad:
        return set()
    grads = torch.autograd.grad(tensor.sum(), inputs, allow_unused=True, retain_graph=True)
    return {n for n, g in zip(names, grads) if g is not None}


def _choose_plate(latent, everything, depends, chain_plate):
    """``(plate name or None, number of chains, plate dim)``."""
    frames = {}
    for site in latent:
        for name, frame in _plates(site).items():
            frames.setdefault(name, frame)
    valid, problems = {}, {}
    for name, frame in frames.items():
        inside = [s for s in latent if name in _plates(s)]
        local = {s["name"] for s in inside}
        bad = [s["name"] for s in everything
               if name not in _plates(s) and depends.get(s["name"], set()) & local]
        if bad:
            problems[name] = bad
            continue
        if frame.full_size is not None and frame.size != frame.full_size:
            problems[name] = f"subsampled ({frame.size} of {frame.full_size})"
            continue
        valid[name] = (sum(s["value"].numel() for s in inside), frame)
    if chain_plate is not None:
        if chain_plate not in frames:
            raise ValueError(f"chain_plate {chain_plate!r} holds no latent site; plates with "
                             f"latent sites: {sorted(frames) or 'none'}")
        if chain_plate not in valid:
            why = problems[chain_plate]
            why = why if isinstance(why, str) else (
                f"sites outside it depend on its latents: {', '.join(why)}")
            raise ValueError(f"chain_plate {chain_plate!r} cannot hold independent chains: "
                             f"{why}")
        frame = valid[chain_plate][1]
        return chain_plate, frame.size, frame.dim
    if not valid:
        return None, 1, None
    best = max(valid.values(), key=lambda v: v[0])[0]
    tied = sorted(name for name, v in valid.items() if v[0] == best)
    if len(tied) > 1:  # nested plates over the same latents: the one with more chains
        most = max(valid[name][1].size for name in tied)
        tied = [name for name in tied if valid[name][1].size == most]
        if len(tied) > 1:
            raise ValueError(f"several plates could hold the chains ({tied}): name the one "
                             "whose elements are independent chains with chain_plate")
    frame = valid[tied[0]][1]
    return tied[0], frame.size, frame.dim


class PotentialTarget:
    """A user's ``potential_fn(params) -> potential energy`` (negative log density) on
    unconstrained ``params``: one chain, no plate, no global block."""

    replicas = 0
    num_chains = 1
    global_size = 0
    has_curvature = False

    def __init__(self, potential_fn, initial_params):
        if not initial_params:
            raise ValueError("a potential_fn needs initial_params to know the sites' shapes")
        self.potential_fn = potential_fn
        self.names = sorted(initial_params)
        self.shapes = {k: tuple(initial_params[k].shape) for k in self.names}
        self.sizes = {k: max(1, math.prod(self.shapes[k])) for k in self.names}
        first = initial_params[self.names[0]]
        self.dtype, self.device = first.dtype, first.device
        self.local_size = sum(self.sizes.values())
        self.transforms = {k: biject_to(constraints.real).inv for k in self.names}
        self.mixture_index = torch.zeros(0, dtype=torch.long, device=self.device)
        self.args, self.kwargs = (), {}

    def pack_free(self, free, replicas=None):
        if replicas:
            raise ValueError("replica chains need a model, not a potential_fn")
        position = torch.cat([free[k].reshape(1, -1) for k in self.names], -1).to(self.dtype)
        return position, position.new_zeros((0,))

    def unpack_free(self, position, glob):
        if position.dim() != 2:
            raise ValueError("replica chains need a model, not a potential_fn")
        out, start = {}, 0
        for k in self.names:
            out[k] = position[0, start:start + self.sizes[k]].reshape(self.shapes[k])
            start += self.sizes[k]
        return out

    def values(self, position, glob):
        return self.unpack_free(position, glob)

    def constrain(self, free):
        return dict(free)

    def density(self, position, glob, args=None, kwargs=None, *, curvature=False,
                crossing=False):
        with torch.enable_grad():
            position = position.detach().requires_grad_(True)
            value = -self.potential_fn(self.unpack_free(position, glob)).reshape(1)
            (grad,) = torch.autograd.grad(value.sum(), position)
        value = value.detach()
        return Density(value, value.new_zeros(()), torch.zeros_like(value), grad,
                       glob.detach(), None, None, None)

    def prior_free(self, args=None, kwargs=None):
        raise ValueError("a potential_fn has no prior to draw from: give initial_params or "
                         "init='zeros' / 'normal'")

    def zeros(self):
        return (torch.zeros(1, self.local_size, dtype=self.dtype, device=self.device),
                torch.zeros(0, dtype=self.dtype, device=self.device))
