"""Alternating back-propagation as a Pyro inference algorithm, shaped like ``pyro.infer.SVI``.

Per step: infer the latents with a fresh short run of the kernel (parameters frozen), then one
optimiser step on every parameter the model registers, maximising the model's log joint at
the inferred latents, then advance the annealing position. The log joint is the model's own
trace, evaluated by the same target the kernel uses (:mod:`pyro_sparsegen.infer.target`).
"""

import math
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.optim import PyroOptim

from . import schedules
from .distributions import base_distribution
from .runtime import forked_rng


class TrainingError(RuntimeError):
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
    ``inclusion_probability`` set to exactly 0 where that probability is below 0.5 (the
    gate's assignment with the spike collapsed to a point).

    The priors are the model's own at these latents (one evaluation of the model); a
    :class:`~pyro_sparsegen.SparseGenerator` without global latents answers directly."""
    from .model import SparseGenerator

    with torch.no_grad():
        if isinstance(model, SparseGenerator) and not target.global_sites:
            try:
                keep = model.inclusion_probability(latents["z"]) >= 0.5
            except NotImplementedError:
                return latents
            return {**latents, "z": latents["z"] * keep}
        with pyro.validation_enabled(False):
            msgs = {m["name"]: m for m in target.terms(latents, args, kwargs)[3]}
        out = dict(latents)
        for site in target.local_sites:
            fn = base_distribution(msgs[site.name]["fn"])
            if hasattr(fn, "inclusion_probability"):
                out[site.name] = latents[site.name] * (
                    fn.inclusion_probability(latents[site.name]) >= 0.5)
    return out


def _distributed():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


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
        self.iteration = int(iteration)
        self._names = {}  # id(param) -> name, for the optimiser's state
        self.move_to(self.iteration)

    # -- the annealing position --
    def move_to(self, iteration):
        """Set the annealing position (the model's and :func:`schedules.set_iteration`)."""
        self.iteration = int(iteration)
        if hasattr(self.model, "iteration"):
            self.model.iteration = self.iteration
        schedules.set_iteration(self.iteration)

    # -- the pieces of a step --
    def _target(self, args, kwargs):
        return self.kernel.target(args, kwargs)

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
        dist = _distributed()
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
        latents = self.kernel.infer(*args, sync=False, **kwargs)
        target = self._target(args, kwargs)
        if self.sparsify:
            latents = sparsified(self.model, target, latents, args, kwargs)
        latents = {k: v.detach() for k, v in latents.items()}
        loss, params, reconstruction = self._loss(target, latents, args, kwargs)
        bad = ~torch.isfinite(loss)
        for v in latents.values():
            bad = bad | ~torch.isfinite(v.sum())
        bad_update = self._update(loss, params)
        self.move_to(self.iteration + 1)
        return StepResult(loss.detach(), latents, self.kernel.last_run, reconstruction, bad,
                          bad_update)

    def step(self, *args, **kwargs):
        """One ABP step: infer, one optimiser step, advance the schedule.

        :return: the loss (negative log joint per datum) before the update, a Python float
        :raises TrainingError: if the loss or the inferred latents are not finite (nothing
            is updated then)
        """
        latents = self.kernel.infer(*args, **kwargs)
        target = self._target(args, kwargs)
        if self.sparsify:
            latents = sparsified(self.model, target, latents, args, kwargs)
        latents = {k: v.detach() for k, v in latents.items()}
        loss, params, _ = self._loss(target, latents, args, kwargs)
        value = float(loss.detach())
        if not math.isfinite(value) or not all(bool(torch.isfinite(v).all())
                                               for v in latents.values()):
            raise TrainingError(f"non-finite loss ({value}) or latents at iteration "
                                f"{self.iteration}; parameters were not updated")
        self._update(loss, params)
        self.move_to(self.iteration + 1)
        return value

    def evaluate_loss(self, *args, **kwargs):
        """The loss at freshly inferred latents, without updating anything (a Python float)."""
        latents = self.kernel.infer(*args, **kwargs)
        target = self._target(args, kwargs)
        if self.sparsify:
            latents = sparsified(self.model, target, latents, args, kwargs)
        with torch.no_grad():
            loss, _, _ = self._loss(target, {k: v.detach() for k, v in latents.items()},
                                    args, kwargs)
        return float(loss)

    # -- the optimiser's state, by parameter name (for checkpoints) --
    def optimizer_state(self):
        """``{parameter name: torch optimiser state dict}``."""
        return {self._names.get(id(p), str(i)): opt.state_dict()
                for i, (p, opt) in enumerate(self.optim.optim_objs.items())}

    def load_optimizer_state(self, states, params):
        """Restore :meth:`optimizer_state` for ``params`` (``{name: tensor}``)."""
        for name, p in params.items():
            if name not in states:
                continue
            # PyroOptim creates an optimiser per parameter lazily; create it now to load it.
            self.optim.optim_objs[p] = self.optim._get_optim(p)
            self.optim.grad_clip[p] = self.optim._get_grad_clip(p)
            self.optim.optim_objs[p].load_state_dict(states[name])
            self._names[id(p)] = name

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

