"""Alternating back-propagation as a Pyro inference algorithm, shaped like ``pyro.infer.SVI``.

Per step: infer the latents with a fresh short run of the kernel (parameters frozen), then one
optimiser step on every parameter the model registers, maximising the model's log joint at
the inferred latents, then advance the annealing position. The log joint is the model's own
trace, evaluated by the same target the kernel uses (:mod:`pyro_sparsegen.infer.target`).
"""

import copy
import math
import warnings
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.optim import PyroOptim

from . import schedules
from .distributions import base_distribution, is_included
from .errors import SparsegenError
from .runtime import distributed, forked_rng


class TrainingError(SparsegenError, RuntimeError):
    """Training stopped because something went numerically wrong (nothing bad was saved)."""


class StepResult(NamedTuple):
    """One :meth:`ABP.device_step`, every tensor left on the device.

    - ``loss``: 0-dim, the negative log joint divided by the data size
    - ``latents``: ``{site: constrained value}`` the step learned from (detached)
    - ``run``: the kernel's :class:`~pyro_sparsegen.infer.RunStats`
    - ``reconstruction``: ``{observed site: (mean of its distribution, observed value)}`` for
      the observed sites in the chain plate whose distribution has a mean
    - ``bad``: 0-dim bool: a non-finite loss or latent on this process
    - ``bad_update``: 0-dim bool: a non-finite gradient (under torch.distributed, after the
      average: any rank's bad step makes every rank's update bad)
    """

    loss: torch.Tensor
    latents: dict
    run: object
    reconstruction: dict
    bad: torch.Tensor
    bad_update: torch.Tensor


def sparsified(model, target, latents, args, kwargs):
    """``latents`` with every coordinate of a per-image site whose prior has an
    ``inclusion_probability`` set to exactly 0 where that probability is below
    :data:`~pyro_sparsegen.distributions.INCLUSION_CUTOFF` (the gate's assignment with the
    spike collapsed to a point).

    The priors are the model's own at these latents, asked through their own interface (the
    site distribution's ``inclusion_probability``, under any ``Independent`` / ``Expanded``
    wrapper), so any prior with one sparsifies — a spike-and-slab or a user's scale mixture.
    They come from one evaluation of the model, or without it from the model's
    ``local_priors()`` hook when it has one (:meth:`pyro_sparsegen.SparseGenerator.local_priors`)
    and the target has no global latents (the per-image priors then depend on nothing that
    is inferred).
    """
    with torch.no_grad():
        out = dict(latents)
        for name, fn in _local_priors(model, target, latents, args, kwargs).items():
            fn = base_distribution(fn)
            if hasattr(fn, "inclusion_probability"):
                out[name] = latents[name] * is_included(fn.inclusion_probability(latents[name]))
    return out


def _local_priors(model, target, latents, args, kwargs):
    """``{per-image latent site: its prior distribution}`` at ``latents``."""
    hook = getattr(model, "local_priors", None)
    if hook is not None and not target.global_sites:
        return hook()
    with pyro.validation_enabled(False):
        msgs = {m["name"]: m for m in target.terms(latents, args, kwargs)[3]}
    return {site.name: msgs[site.name]["fn"] for site in target.local_sites}


def infer_latents(model, kernel, args, kwargs, *, sparsify=False, sync=True):
    """The one way the package infers latents to learn from or to hand out as codes: a fresh
    short run of ``kernel`` on the model's arguments, optionally :func:`sparsified`, detached.

    :param sync: ``False``: no host read (the kernel leaves its checks on the device).
    :return: ``({site: constrained value}, the kernel's target for these arguments)``
    """
    latents = kernel.infer(*args, **kwargs) if sync else \
        kernel.infer(*args, sync=False, **kwargs)
    target = kernel.target(args, kwargs)
    if sparsify:
        latents = sparsified(model, target, latents, args, kwargs)
    return {k: v.detach() for k, v in latents.items()}, target


class OptimizerStates:
    """The one adapter to :class:`pyro.optim.PyroOptim`'s internals, for checkpoints and the
    rollback.

    Why not PyroOptim's own ``get_state`` / ``set_state``: they key the torch optimisers by
    param-store name and create them lazily at the first step, while ABP also learns an
    ``nn.Module`` model's own parameters (which are not in the param store), a resumed run
    must load every optimiser's state before its first step, and a rollback must also drop
    the optimisers created during the steps it undoes. So this keeps the states by the names
    ABP gives the parameters, creating an optimiser the way PyroOptim itself would
    (``_get_optim`` / ``_get_grad_clip``).
    """

    def __init__(self, optim):
        self.optim = optim

    def state(self, names):
        """``{name: torch optimiser state dict}``; ``names``: ``{id(param): name}`` (a
        parameter without a name is keyed by its position)."""
        return {names.get(id(p), str(i)): opt.state_dict()
                for i, (p, opt) in enumerate(self.optim.optim_objs.items())}

    def load(self, states, params):
        """Create the optimiser of every parameter of ``params`` (``{name: tensor}``) named in
        ``states`` and load its state."""
        for name, p in params.items():
            if name in states:
                self.optim.optim_objs[p] = self.optim._get_optim(p)
                self.optim.grad_clip[p] = self.optim._get_grad_clip(p)
                self.optim.optim_objs[p].load_state_dict(states[name])

    def snapshot(self):
        """A copy of every optimiser's state, for :meth:`restore`."""
        return {p: copy.deepcopy(o.state_dict()) for p, o in self.optim.optim_objs.items()}

    def restore(self, snapshot):
        """Back to a :meth:`snapshot`: the states loaded, optimisers created since dropped."""
        for p, state in snapshot.items():
            self.optim.optim_objs[p].load_state_dict(state)
        for p in list(self.optim.optim_objs):
            if p not in snapshot:
                del self.optim.optim_objs[p]


class ABP:
    r"""Alternating back-propagation (Han et al. 2017) for any Pyro model with continuous
    latents, the shape of :class:`pyro.infer.SVI`::

        kernel = psg.ShortRunLangevin(model, noise=False, prior_step="semi-implicit")
        abp = psg.ABP(model, kernel, pyro.optim.Adam({"lr": 1e-3, "betas": (0.5, 0.999)}),
                      num_data=len(data))
        for x in batches:
            loss = abp.step(x)

    :param model: a Pyro model (a function using ``pyro.module`` / ``pyro.param``, or a
        ``PyroModule``): every parameter it registers is learned, through Pyro's param store
        as with SVI, plus an ``nn.Module`` model's own ``parameters()``. Constrained
        ``pyro.param``\ s are optimised in their unconstrained space, so they stay inside
        their constraint.
    :param kernel: a :class:`~pyro_sparsegen.ShortRunLangevin` on the same ``model`` object:
        one fresh short run per step infers the latents, the parameters frozen. Global latents
        (outside the chain plate) are inferred by the kernel's global block.
    :param optim: a :class:`pyro.optim.PyroOptim` (one torch optimiser per parameter).
    :param int num_data: the data size ``N``: the terms of the chain plate (per image) are
        scaled by ``N / batch`` as Pyro scales a subsampled plate, and the loss is divided by
        ``N``, so neither its scale nor its optimum depends on the batch size (default: the
        batch size of each step, no scaling).
    :param bool sparsify: after inference, set every coordinate of a latent site whose prior
        has an ``inclusion_probability`` (:class:`~pyro_sparsegen.SpikeAndSlab`) to exactly 0
        where that probability is below 0.5, so the model learns from sparse codes.

    The annealing position (:attr:`iteration`) advances by one per step; it reaches the model
    through ``model.iteration`` when the model has one (:class:`~pyro_sparsegen.SparseGenerator`)
    and through :func:`pyro_sparsegen.schedules.set_iteration` (what
    :class:`~pyro_sparsegen.schedules.Annealed` reads) for any model. Under
    ``torch.distributed`` every parameter's gradient is averaged across the ranks before the
    step, so ranks stay identical and 2 ranks of batch b equal one process of batch 2b.
    """

    def __init__(self, model, kernel, optim, *, num_data=None, sparsify=False, iteration=0):
        if getattr(kernel, "model", None) is not model:
            raise ValueError("kernel.model must be the model ABP trains (the same object): "
                             "build the kernel with ShortRunLangevin(model, ...)")
        if not isinstance(optim, PyroOptim):
            raise ValueError(f"optim must be a pyro.optim.PyroOptim (e.g. pyro.optim.Adam("
                             f"{{'lr': 1e-3}})), got {type(optim).__name__}")
        if num_data is not None and (isinstance(num_data, bool) or not isinstance(
                num_data, int) or num_data < 1):
            raise ValueError(f"num_data must be a positive integer, got {num_data!r}")
        self.model, self.kernel, self.optim = model, kernel, optim
        self.num_data = num_data
        self.sparsify = bool(sparsify)
        #: the learner's position on the annealing schedule (training iterations so far)
        self.iteration = int(iteration)
        self._names = {}  # id(param) -> name, for the optimiser's state
        self.optimizers = OptimizerStates(optim)
        self.set_iteration(self.iteration)

    # -- the annealing position --
    def set_iteration(self, iteration):
        """Set the annealing position (the model's and :func:`schedules.set_iteration`)."""
        self.iteration = int(iteration)
        if hasattr(self.model, "iteration"):
            self.model.iteration = self.iteration
        schedules.set_iteration(self.iteration)

    def move_to(self, iteration):
        """Deprecated name of :meth:`set_iteration`."""
        warnings.warn("ABP.move_to is deprecated: use ABP.set_iteration", DeprecationWarning,
                      stacklevel=2)
        self.set_iteration(iteration)

    # -- the pieces of a step --
    def infer(self, *args, sync=True, **kwargs):
        """The latents a step learns from: :func:`infer_latents` with this learner's kernel
        and ``sparsify``: ``({site: detached constrained value}, target)``."""
        return infer_latents(self.model, self.kernel, args, kwargs, sparsify=self.sparsify,
                             sync=sync)

    def _loss(self, target, values, args, kwargs):
        """``(loss, params, reconstruction)``: the scaled negative log joint per datum at
        constrained ``values``, the unconstrained parameters it depends on, and the observed
        sites' means."""
        with poutine.trace(param_only=True) as capture, pyro.validation_enabled(False):
            local, shared, _, msgs = target.terms(values, args, kwargs)
        batch = target.num_chains
        n = self.num_data or batch
        loss = -(local.sum() * (n / batch) + shared.sum()) / n
        params = self._collect(capture.trace)
        reconstruction = {}
        for msg in msgs:
            if msg["is_observed"] and target.in_chain_plate(msg):
                try:
                    mean = msg["fn"].mean
                except NotImplementedError:
                    continue
                reconstruction[msg["name"]] = (mean.detach(), msg["value"])
        return loss, params, reconstruction

    def _update(self, loss, params):
        tensors = [p for p in params.values() if p.requires_grad]
        for name, p in params.items():
            self._names[id(p)] = name
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for p, g in zip(tensors, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        dist = distributed()
        if dist is not None:
            _average_gradients(dist, tensors)
        bad = ~torch.isfinite(torch.stack([p.grad.sum() for p in tensors]).sum()) \
            if tensors else torch.zeros((), dtype=torch.bool)
        self.optim(tensors)
        for p in tensors:
            p.grad = None
        return bad

    def device_step(self, *args, **kwargs):
        """:meth:`step` without any host read (for a training loop on a GPU): the loss stays
        on the device and a non-finite value only sets ``bad`` (the caller checks it, every
        few steps, and rolls back).

        :return: :class:`StepResult`
        """
        latents, target = self.infer(*args, sync=False, **kwargs)
        loss, params, reconstruction = self._loss(target, latents, args, kwargs)
        bad = ~torch.isfinite(loss)
        for v in latents.values():
            bad = bad | ~torch.isfinite(v.sum())
        bad_update = self._update(loss, params)
        self.set_iteration(self.iteration + 1)
        return StepResult(loss.detach(), latents, self.kernel.last_run, reconstruction, bad,
                          bad_update)

    def step(self, *args, **kwargs):
        """One ABP step: infer, one optimiser step, advance the schedule.

        :return: the loss (negative log joint per datum) before the update, a Python float
        :raises TrainingError: if the loss or the inferred latents are not finite (nothing
            is updated then)
        """
        latents, target = self.infer(*args, **kwargs)
        loss, params, _ = self._loss(target, latents, args, kwargs)
        value = float(loss.detach())
        if not math.isfinite(value) or not all(bool(torch.isfinite(v).all())
                                               for v in latents.values()):
            raise TrainingError(f"non-finite loss ({value}) or latents at iteration "
                                f"{self.iteration}; parameters were not updated")
        self._update(loss, params)
        self.set_iteration(self.iteration + 1)
        return value

    def evaluate_loss(self, *args, **kwargs):
        """The loss at freshly inferred latents, without updating anything (a Python float)."""
        latents, target = self.infer(*args, **kwargs)
        with torch.no_grad():
            loss, _, _ = self._loss(target, latents, args, kwargs)
        return float(loss)

    # -- the optimiser's state, by parameter name (for checkpoints) --
    def optimizer_state(self):
        """``{parameter name: torch optimiser state dict}``."""
        return self.optimizers.state(self._names)

    def load_optimizer_state(self, states, params):
        """Restore :meth:`optimizer_state` for ``params`` (``{name: tensor}``, e.g.
        :meth:`parameters`): PyroOptim creates an optimiser per parameter lazily, so they
        are created here to be loaded."""
        self.optimizers.load(states, params)
        for name, p in params.items():
            if name in states:
                self._names[id(p)] = name

    # -- the state a step changes, for a rollback --
    def _state_tensors(self):
        tensors = dict(pyro.get_param_store().named_parameters())
        if isinstance(self.model, torch.nn.Module):
            tensors.update(self.model.state_dict(keep_vars=True))
        return tensors

    def snapshot(self):
        """A copy, on the device, of everything a step changes: the param store's and an
        ``nn.Module`` model's tensors, the optimiser states, the annealing position (and the
        model's ``handover_iteration``, where a learned prior takes over). For
        :meth:`restore`."""
        with torch.no_grad():
            tensors = {k: v.detach().clone() for k, v in self._state_tensors().items()}
        return {"tensors": tensors, "optim": self.optimizers.snapshot(),
                "iteration": self.iteration,
                "handover": getattr(self.model, "handover_iteration", None)}

    def restore(self, snapshot):
        """Back to a :meth:`snapshot` (no host read)."""
        current = self._state_tensors()
        with torch.no_grad():
            for name, value in snapshot["tensors"].items():
                if name in current:
                    current[name].copy_(value)
        self.optimizers.restore(snapshot["optim"])
        if hasattr(self.model, "handover_iteration"):
            self.model.handover_iteration = snapshot["handover"]
        self.set_iteration(snapshot["iteration"])

    def _collect(self, trace):
        """``{name: unconstrained tensor}`` of a ``param_only`` trace's parameters, and an
        ``nn.Module`` model's own parameters."""
        params = {}
        for name, site in trace.nodes.items():
            value = site["value"]
            params[name] = value.unconstrained() if hasattr(value, "unconstrained") else value
        if isinstance(self.model, torch.nn.Module):
            seen = {id(p) for p in params.values()}
            params.update({name: p for name, p in self.model.named_parameters()
                           if id(p) not in seen and p.requires_grad})
        return params

    def parameters(self, *args, **kwargs):
        """``{name: unconstrained parameter}`` the model registers when called with these
        arguments (runs the model once, under a forked RNG)."""

        with forked_rng(self.model, args, kwargs), pyro.validation_enabled(False), \
                torch.no_grad(), poutine.trace(param_only=True) as capture:
            self.model(*args, **kwargs)
        return self._collect(capture.trace)


def _average_gradients(dist, tensors):
    """All-reduce (mean) the gradients of ``tensors`` in one flat buffer."""
    flat = torch.cat([p.grad.reshape(-1) for p in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    start = 0
    for p in tensors:
        n = p.grad.numel()
        p.grad.copy_(flat[start:start + n].view_as(p.grad))
        start += n

