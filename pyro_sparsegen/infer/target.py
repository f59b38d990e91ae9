"""A Pyro model as the core's density: site layout, transforms, plates, blocks.

:class:`ModelTarget` traces the model once (under a forked RNG, so building a target leaves
the global RNG alone) and fixes, as Pyro's HMC does, each latent site's transform
``biject_to(support)``; the kernel moves in the unconstrained space and every site's
``log |det J|`` joins its log density. The chain plate (one chain per element, e.g. per image)
is the plate given as ``chain_plate`` or, by default, the plate holding the most latent
coordinates such that no site outside it depends on the latents inside it. Latent sites inside
it form each chain's block (``position: [*R, N, D]``, every batch dim the site has, declared
by a plate or not, flattened into ``D``); latent sites outside it form the global block
(``global_position: [*R, G]``). A model without such a plate is one chain (``N = 1``).

The density is evaluated by running the model itself under one light effect handler
(:class:`~pyro_sparsegen.infer.sites.Evaluate`) that substitutes the latent values and
collects every sample site's ``log_prob`` (scaled and masked as Pyro does); nothing of the
model is written twice. The sites' own helpers (what is latent, the plate's choice, the
dependencies) are in :mod:`.sites`.
"""

import math

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, constraints

from ..distributions import base_distribution
from ..runtime import forked_rng
from .core import Density
from .sites import (Evaluate, Site, check_continuous, choose_plate, dependencies, is_identity,
                    is_scale_mixture, log_scale_ratio, normal_log_prob, plates, replicated,
                    secant_curvature, site_log_prob)

_normal_log_prob = normal_log_prob  # the former name (tests import it from here)

class ModelTarget:
    """The log density of a Pyro model's latent sites, per element of its chain plate.

    :param model: a Pyro model.
    :param args: the model's positional arguments.
    :param kwargs: the model's keyword arguments.
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
            check_continuous(site)
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
        depends = dependencies(model, args, kwargs, latent)
        self.plate, self.num_chains, self.plate_dim = choose_plate(latent, everything, depends,
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
        self.pair_sites = self._pairs()
        self._local_names = {s.name for s in self.local_sites}
        self.observed_outside = [site["name"] for site in observed
                                 if not self.in_chain_plate(site)]

    def _pairs(self):
        """What the pair move picks from (``(index, start, size)``, see
        :func:`~pyro_sparsegen.infer.core.draw_randoms`): the chains' scale-mixture
        coordinates and, for each, where its site's coordinates start among them and how many
        there are."""
        index, start, size = [], [], []
        for s in self.local_sites:
            if s.mixture:
                start += [len(index)] * s.size
                size += [s.size] * s.size
                index += [s.offset + i for i in range(s.size)]

        def tensor(values):
            return torch.tensor(values, dtype=torch.long, device=self.device)

        return tensor(index), tensor(start), tensor(size)

    def check_temperable(self):
        """Refuse (``ValueError``, one line) a model whose likelihood cannot be tempered per
        chain: one with a global block or with observed sites outside the chain plate (a swap
        per image would need the cross terms of what the chains share)."""
        if self.global_size:
            raise ValueError(f"tempering needs every latent site in the chain plate "
                             f"{self.plate!r}; {[s.name for s in self.global_sites]} are "
                             "outside it (a global block: per-image swaps would need the cross "
                             "terms of the shared latents)")
        if self.observed_outside:
            raise ValueError(f"tempering needs every observed site in the chain plate "
                             f"{self.plate!r}; {self.observed_outside} are outside it")

    # -- layout --
    def _layout(self, latent):
        sites, offsets = [], {True: 0, False: 0}
        for site in latent:
            fn, value = site["fn"], site["value"]
            transform = biject_to(fn.support)
            free = transform.inv(value)
            batch = value.dim() - fn.event_dim
            local = self.plate is not None and self.plate in plates(site)
            chain_dim = batch + self.plate_dim if local else None
            n = self.num_chains if local else 1
            mixture = is_scale_mixture(fn) and is_identity(transform)
            crossing = mixture and hasattr(base_distribution(fn), "component_scales")
            size = free.numel() // n
            sites.append(Site(site["name"], local or self.plate is None, value.shape,
                               fn.event_dim, transform, is_identity(transform), free.shape,
                               fn.event_dim - transform.codomain.event_dim, chain_dim, size,
                               offsets[local or self.plate is None], mixture, crossing))
            offsets[local or self.plate is None] += size
        return sites

    def _lead(self, tensor, block_rank):
        return tuple(tensor.shape[:tensor.dim() - block_rank])

    def unpack_free(self, position, global_position):
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
            out[s.name] = global_position[..., s.offset:s.offset + s.size].reshape(
                lead + tuple(s.free_shape))
        return out

    def pack_free(self, free, replicas=None):
        """``(position [*R, N, D], global_position [*R, G])`` from unconstrained values
        ``[*R, *free]``."""
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
        g = torch.cat(parts_global, -1) if parts_global else position.new_zeros(lead + (0,))
        return position.to(self.dtype), g.to(self.dtype)

    def constrain(self, free):
        """Constrained values from unconstrained ones (same leading dims)."""
        return {s.name: free[s.name] if s.identity else s.transform(free[s.name])
                for s in self.sites}

    def unconstrain(self, values):
        return {s.name: values[s.name] if s.identity else s.transform.inv(values[s.name])
                for s in self.sites}

    def values(self, position, global_position):
        """Constrained values ``{site: [*R, *shape]}`` at a position."""
        return self.constrain(self.unpack_free(position, global_position))

    # -- running the model --
    def _run(self, values, args, kwargs):
        """Run the model with ``values`` substituted (``[*R, *shape]``); return its sites."""
        if self.replicas:
            values = {name: self._pad(name, v) for name, v in values.items()}
        with Evaluate(values) as ev, replicated(self.replicas, self._replica_dim):
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
        latent, shared, observed, msgs = self.split_terms(values, args, kwargs, jacobians)
        return latent + observed, shared, observed, msgs

    def split_terms(self, values, args=None, kwargs=None, jacobians=None):
        """As :meth:`terms`, with the chains' latent part (prior and Jacobians) apart from the
        observed part: ``(latent [*R, N], shared [*R], observed [*R, N], sites)``."""
        args = self.args if args is None else args
        kwargs = self.kwargs if kwargs is None else kwargs
        msgs = self._run(values, args, kwargs)
        local = shared = observed = None

        def add(total, part):
            return part if total is None else total + part

        for msg in msgs:
            term = site_log_prob(msg)
            if jacobians is not None and msg["name"] in jacobians:
                term = term + jacobians[msg["name"]]
            in_plate = self.in_chain_plate(msg)
            part = self._per_chain(term, in_plate)
            if in_plate and msg["is_observed"]:
                observed = add(observed, part)
            elif in_plate:
                local = add(local, part)
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

    def density(self, position, global_position, args=None, kwargs=None, *, curvature=False,
                crossing=False, beta=None):
        """:class:`~pyro_sparsegen.infer.core.Density` at ``position`` / ``global_position``: the
        model's log joint with the transforms' Jacobians, its gradient, and (``curvature``,
        ``crossing``) what the semi-implicit step and the crossing move need.

        :param beta: ``[*R, N]`` inverse temperatures of the chains' likelihood, or ``None``:
            the density is then ``prior + beta * observed`` with the observed part and its
            gradient kept untempered (``grad_observed``); refused for a model
            :meth:`check_temperable` refuses.
        """
        grad_observed = None
        with torch.enable_grad():
            position = position.detach().requires_grad_(True)
            global_position = global_position.detach().requires_grad_(self.global_size > 0)
            free = self.unpack_free(position, global_position)
            values = self.constrain(free)
            latent, shared, observed, msgs = self.split_terms(values, args, kwargs,
                                                              self._jacobians(free, values))
            inputs = [position, global_position] if self.global_size else [position]
            if beta is None:
                local = latent + observed
                grads = torch.autograd.grad(local.sum() + shared.sum(), inputs,
                                            allow_unused=True)
            else:
                self.check_temperable()
                # two backward passes, each through its own part only (the prior's is cheap):
                # a swap moves a state to another beta by arithmetic on the two
                grad_prior = _grad(latent, position, retain_graph=True)
                grad_observed = _grad(observed, position)
                grads = (grad_prior + beta.unsqueeze(-1) * grad_observed,)
                local = latent + beta * observed
        grad = _zero_if_none(grads[0], position)
        grad_global = _zero_if_none(grads[1], global_position) if self.global_size else \
            global_position.detach()
        kappa = kappa_global = ratio = None
        if (curvature and self.has_curvature) or (crossing and self.mixture_index.numel()):
            by_name = {msg["name"]: msg for msg in msgs}
            if curvature and self.has_curvature:
                kappa, kappa_global = self._mixture_arrays(by_name, secant_curvature,
                                                           lambda s: s.mixture)
            if crossing and self.mixture_index.numel():
                ratio, _ = self._mixture_arrays(by_name, log_scale_ratio,
                                                lambda s: s.crossing and s.local)
        return Density(local.detach(), shared.detach(), observed.detach(), grad, grad_global,
                       kappa, kappa_global, ratio, grad_observed)

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
        local, global_position = self.pack_free(arrays)
        return local, (global_position if any(wanted(s) for s in self.global_sites) else None)

    # -- starts --
    def prior_free(self, args=None, kwargs=None):
        """A draw of every latent site from the model (prior draws), unconstrained, packed.
        (Consumes the global RNG, as sampling should.)"""
        args = self.args if args is None else args
        kwargs = self.kwargs if kwargs is None else kwargs
        with replicated(self.replicas, self._replica_dim):
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


def _grad(value, position, retain_graph=False):
    """``d value.sum() / d position`` (zeros where ``value`` does not depend on it)."""
    if not value.requires_grad:
        return torch.zeros_like(position)
    (grad,) = torch.autograd.grad(value.sum(), [position], allow_unused=True,
                                  retain_graph=retain_graph)
    return _zero_if_none(grad, position)


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
        self.pair_sites = (self.mixture_index,) * 3
        self.args, self.kwargs = (), {}

    def pack_free(self, free, replicas=None):
        if replicas:
            raise ValueError("replica chains need a model, not a potential_fn")
        position = torch.cat([free[k].reshape(1, -1) for k in self.names], -1).to(self.dtype)
        return position, position.new_zeros((0,))

    def unpack_free(self, position, global_position):
        if position.dim() != 2:
            raise ValueError("replica chains need a model, not a potential_fn")
        out, start = {}, 0
        for k in self.names:
            out[k] = position[0, start:start + self.sizes[k]].reshape(self.shapes[k])
            start += self.sizes[k]
        return out

    def values(self, position, global_position):
        return self.unpack_free(position, global_position)

    def constrain(self, free):
        return dict(free)

    def density(self, position, global_position, args=None, kwargs=None, *, curvature=False,
                crossing=False):
        with torch.enable_grad():
            position = position.detach().requires_grad_(True)
            value = -self.potential_fn(self.unpack_free(position, global_position)).reshape(1)
            (grad,) = torch.autograd.grad(value.sum(), position)
        value = value.detach()
        return Density(value, value.new_zeros(()), torch.zeros_like(value), grad,
                       global_position.detach(), None, None, None)

    def prior_free(self, args=None, kwargs=None):
        raise ValueError("a potential_fn has no prior to draw from: give initial_params or "
                         "init='zeros' / 'normal'")

    def zeros(self):
        return (torch.zeros(1, self.local_size, dtype=self.dtype, device=self.device),
                torch.zeros(0, dtype=self.dtype, device=self.device))
