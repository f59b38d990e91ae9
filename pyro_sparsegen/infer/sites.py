"""A Pyro model's sites as the kernel sees them: which are latent, continuous, scale mixtures;
their log densities under a light effect handler (:class:`Evaluate`, which substitutes the
latent values and keeps every sample site's message); what depends on what; and the plate
whose elements are independent chains (:func:`choose_plate`).

:class:`~pyro_sparsegen.infer.target.ModelTarget` lays these sites out as the core's blocks.
"""

import contextlib
from typing import NamedTuple, Optional

import pyro
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, constraints

from ..distributions import base_distribution, isotropic_normal_log_prob
from ..runtime import forked_rng

_NORMALS = (torch.distributions.Normal, pyro.distributions.Normal)
Independent = torch.distributions.Independent


class Site(NamedTuple):
    """One latent site's place in the blocks (see
    :class:`~pyro_sparsegen.infer.target.ModelTarget`)."""

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


def is_identity(transform):
    while isinstance(transform, torch.distributions.transforms.IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, torch.distributions.transforms.ComposeTransform) and \
        not transform.parts


def is_scale_mixture(fn):
    """Whether a site's distribution declares itself a zero-centred scale mixture
    (``scale_mixture = True``, as :class:`~pyro_sparsegen.SpikeAndSlab`)."""
    return bool(getattr(base_distribution(fn), "scale_mixture", False))


def plates(msg):
    return {f.name: f for f in msg["cond_indep_stack"] if f.vectorized}


class Evaluate(Messenger):
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


def site_log_prob(msg):
    fn, value = msg["fn"], msg["value"]
    out = normal_log_prob(fn, value)
    return scale_and_mask(fn.log_prob(value) if out is None else out, msg["scale"],
                          msg["mask"])


def normal_log_prob(fn, value):
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


def secant_curvature(fn, value, eps=1e-6):
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


def log_scale_ratio(fn, value):
    spike, slab = base_distribution(fn).component_scales()
    return (slab.log() - spike.log()).expand(value.shape)



@contextlib.contextmanager
def replicated(replicas, dim):
    if not replicas:
        yield
        return
    with pyro.plate("_replicas", replicas, dim=dim):
        yield


def check_continuous(site):
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


def dependencies(model, args, kwargs, latent):
    """``{site: set of latent sites its log density depends on}`` (autograd connectivity at
    the first trace's values); refuses supports that depend on another latent."""
    leaves = {s["name"]: s["value"].detach().clone().requires_grad_(
        s["value"].is_floating_point()) for s in latent}
    names = list(leaves)
    with forked_rng(model, args, kwargs), torch.enable_grad(), pyro.validation_enabled(False):
        with Evaluate(leaves) as ev:
            model(*args, **kwargs)
        inputs = [leaves[n] for n in names]
        out = {}
        for msg in ev.sites:
            term = site_log_prob(msg)
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


def choose_plate(latent, everything, depends, chain_plate):
    """``(plate name or None, number of chains, plate dim)``."""
    frames = {}
    for site in latent:
        for name, frame in plates(site).items():
            frames.setdefault(name, frame)
    valid, problems = {}, {}
    for name, frame in frames.items():
        inside = [s for s in latent if name in plates(s)]
        local = {s["name"] for s in inside}
        bad = [s["name"] for s in everything
               if name not in plates(s) and depends.get(s["name"], set()) & local]
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
