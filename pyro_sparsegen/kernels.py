"""Short-run Langevin dynamics: a batched functional core and a Pyro ``MCMCKernel`` adapter.

The core works on ``position: [*replicas, chains, dim]``: every element of the model's batch
plate (every image) is an independent chain, all advanced together as one tensor. A step is

    z' = z + P * (h * grad log p(z | x) + delta * eps),    h = delta^2 / 2,  eps ~ N(0, I)

with ``P = 1`` (``prior_step="explicit"``, plain Langevin / MALA) or, with
``prior_step="semi-implicit"``, ``P = 1 / (1 + h * kappa(z))`` where ``kappa(z) = -d/dz log
p_prior(z) / z`` is the prior's secant curvature (exactly the curvature of each mixture
component, weighted by its responsibility, for zero-centred scale-mixture priors such as the
spike-and-slab). That equals treating the prior's pull towards zero implicitly, so a spike of
any width stays stable: the explicit step diverges once ``h / s_spike^2 > 2``.
"""

import math
import numbers
from collections import OrderedDict
from typing import NamedTuple, Optional

import pyro
import torch
from pyro import poutine
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, constraints

INITS = ("zeros", "prior", "normal")
MAX_ENERGY_ERROR = 1000.0  # nats; as Pyro's HMC counts a divergence
PRIOR_STEPS = ("explicit", "semi-implicit")


class LangevinState(NamedTuple):
    """What the next step needs.

    - ``position``: ``[*replicas, chains, dim]``
    - ``log_prior``, ``log_likelihood``: ``[*replicas, chains]``, at ``position``
    - ``grad``: gradient of ``log_prior + log_likelihood`` w.r.t. ``position``
    - ``precond``: diagonal preconditioner ``P`` in (0, 1] (semi-implicit step) or ``None``
    """

    position: torch.Tensor
    log_prior: torch.Tensor
    log_likelihood: torch.Tensor
    grad: torch.Tensor
    precond: Optional[torch.Tensor]


class LangevinInfo(NamedTuple):
    """What a user may want to look at after a step, each ``[*replicas, chains]``."""

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    diverging: torch.Tensor


def secant_curvature(log_prior_fn, eps=1e-6):
    """``kappa(z) = max(-d/dz log p(z) / z, 0)`` for a prior that factorises over coordinates,
    from autograd of ``log_prior_fn(position) -> [*replicas, chains]``; exact zeros use
    ``z = eps`` (the limit)."""

    def curvature(position):
        z = torch.where(position.abs() < eps, torch.full_like(position, eps), position)
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_prior_fn(z).sum(), z)
        return (-grad / z.detach()).clamp(min=0.0).nan_to_num(nan=0.0, posinf=1e30)

    return curvature


def langevin_init(position, log_density_fn, step_size, curvature_fn=None):
    """Evaluate ``log_density_fn(position) -> (log_prior, log_likelihood)`` and its gradient."""
    with torch.enable_grad():
        pos = position.detach().requires_grad_(True)
        log_prior, log_lik = log_density_fn(pos)
        (grad,) = torch.autograd.grad((log_prior + log_lik).sum(), pos)
    pos.requires_grad_(False)  # a leaf: the state's position, without another detach
    precond = None
    if curvature_fn is not None:
        precond = 1.0 / (1.0 + 0.5 * step_size**2 * curvature_fn(pos))
    return LangevinState(pos, log_prior.detach(), log_lik.detach(), grad, precond)


def _proposal_log_prob(value, mean, scale):
    """``log N(value; mean, scale^2)`` summed over the last dim, up to a constant that cancels
    between the forward and the reverse proposal; ``scale`` is a tensor or a number."""
    if isinstance(scale, torch.Tensor):
        return (-0.5 * ((value - mean) / scale) ** 2 - scale.log()).sum(-1)
    return ((value - mean) ** 2).sum(-1) * (-0.5 / scale**2)


def _all_finite(log_joint, *rows):
    """``[*replicas, chains]``: ``log_joint`` and every entry of the ``rows`` (tensors of one
    shape ``[*replicas, chains, dim]``) finite.

    ``x - x`` is 0 for a finite ``x`` and nan otherwise, so one sum tells; ``torch.isfinite``
    costs several kernels per call on the CPU (as much as 5 % of a small model's step)."""
    rows_total = None
    for row in rows:
        rows_total = row - row if rows_total is None else rows_total + (row - row)
    return rows_total.sum(-1) + (log_joint - log_joint) == 0


def langevin_step(state, log_density_fn, step_size, *, noise=True, metropolis=False,
                  curvature_fn=None, max_energy_error=MAX_ENERGY_ERROR):
    """One (optionally Metropolis-adjusted) Langevin transition for every chain at once.

    Chains whose proposal has a non-finite log density or gradient, or whose log density falls
    by more than ``max_energy_error`` nats in one step (an exploding, unstable step), are
    *diverging*: they keep their current state. With ``metropolis=True`` each chain accepts or
    rejects on its own.

    :return: ``(LangevinState, LangevinInfo)``
    """
    if metropolis and not noise:
        raise ValueError("metropolis=True needs noise=True")
    h = 0.5 * step_size**2
    z = state.position
    if state.precond is None:  # plain Langevin: no preconditioner to multiply by
        mean = z + h * state.grad
        scale = step_size
    else:
        mean = z + state.precond * h * state.grad
        scale = state.precond * step_size
    proposal = mean + scale * torch.randn_like(z) if noise else mean
    new = langevin_init(proposal, log_density_fn, step_size, curvature_fn)
    new_log_joint = new.log_prior + new.log_likelihood
    log_joint = state.log_prior + state.log_likelihood
    finite = _all_finite(new_log_joint, new.grad, proposal) & (
        new_log_joint > log_joint - max_energy_error)
    if metropolis:
        if new.precond is None:
            reverse_mean, reverse_scale = proposal + h * new.grad, step_size
        else:
            reverse_mean = proposal + new.precond * h * new.grad
            reverse_scale = new.precond * step_size
        log_ratio = (new_log_joint - log_joint
                     + _proposal_log_prob(z, reverse_mean, reverse_scale)
                     - _proposal_log_prob(proposal, mean, scale))
        accept_prob = torch.where(finite, log_ratio.clamp(max=0.0).exp(),
                                  torch.zeros_like(log_ratio))
        accepted = torch.rand_like(accept_prob) < accept_prob
    else:
        accept_prob = finite.to(new_log_joint.dtype)
        accepted = finite
    keep = accepted.unsqueeze(-1)
    state = LangevinState(
        torch.where(keep, new.position, z),
        torch.where(accepted, new.log_prior, state.log_prior),
        torch.where(accepted, new.log_likelihood, state.log_likelihood),
        torch.where(keep, new.grad, state.grad),
        None if state.precond is None else torch.where(keep, new.precond, state.precond),
    )
    return state, LangevinInfo(accept_prob, accepted, ~finite)


# ------------------------------------------------------------------------------------------
# Targets: turn a Pyro model (or a potential function) into the core's log density.


def _signature(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device)
    if value is None or isinstance(value, (numbers.Number, str)):
        return value
    return ("object", id(value))


def _is_real(support):
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


class _Site(NamedTuple):
    name: str
    shape: tuple  # the site's value shape
    event_dim: int
    batch_dim: int  # dim of ``value`` that is the chain plate (non-negative), or None
    size: int  # numel per chain


def _cuda_devices(model, args, kwargs):
    """Indices of the CUDA devices the model's arguments, parameters or default device use."""
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    if isinstance(model, torch.nn.Module):
        tensors += list(model.parameters())
    devices = {t.device for t in tensors} | {torch.get_default_device()}
    return sorted({torch.cuda.current_device() if d.index is None else d.index
                   for d in devices if d.type == "cuda"})


class _ModelTarget:
    """The log density of a Pyro model's latent sites, per element of its chain plate.

    Built from one trace of the model; the per-step log density uses the model's fast path
    (``log_joint_terms``) when it has one, else a conditioned trace of the model itself.
    """

    def __init__(self, model, args, kwargs, chain_plate):
        # The build-time trace only reads shapes: it draws on a forked RNG so that building
        # (or rebuilding) the target never moves the global streams, e.g. on resume.
        with torch.random.fork_rng(devices=_cuda_devices(model, args, kwargs)):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        latent, observed = [], []
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            (observed if site["is_observed"] else latent).append(site)
        if not latent:
            raise ValueError("the model has no latent sample site to infer")
        for site in latent:
            if site["infer"].get("enumerate") or not _is_real(site["fn"].support):
                raise ValueError(
                    f"latent site {site['name']!r} has support {site['fn'].support}; "
                    "ShortRunLangevin samples real-valued sites only (reparametrise it, e.g. "
                    "sample the logarithm of a positive quantity)")
        self.max_plate_nesting = max(
            [-f.dim for s in latent + observed for f in s["cond_indep_stack"] if f.vectorized]
            + [0])
        self.plate = self._find_plate(latent, observed, chain_plate)
        self.sites = []
        for site in latent:
            value, event_dim = site["value"], site["fn"].event_dim
            batch_dim = None
            if self.plate is not None:
                frame = next(f for f in site["cond_indep_stack"] if f.name == self.plate)
                batch_dim = value.dim() - event_dim + frame.dim
            self.sites.append(_Site(site["name"], tuple(value.shape), event_dim, batch_dim,
                                    value.numel() // self.num_chains))
        self.names = [s.name for s in self.sites]
        only = self.sites[0]
        self._whole = only.name if len(self.sites) == 1 and only.batch_dim == 0 \
            and only.shape == (self.num_chains, only.size) else None
        self.dtype, self.device = latent[0]["value"].dtype, latent[0]["value"].device
        self.model = model
        self.fast = hasattr(model, "log_joint_terms") and hasattr(model, "log_prior_terms")

    def _find_plate(self, latent, observed, chain_plate):
        def plates(site):
            return {f.name: f for f in site["cond_indep_stack"] if f.vectorized}

        common = set(plates(latent[0]))
        for site in latent[1:] + observed:
            common &= set(plates(site))
        if chain_plate is not None:
            if chain_plate not in common:
                raise ValueError(
                    f"chain_plate {chain_plate!r} must contain every sample site of the model; "
                    f"plates containing all sites: {sorted(common) or 'none'}")
            common = {chain_plate}
        if len(common) > 1:
            raise ValueError(f"several plates contain every site ({sorted(common)}): "
                             "name the one whose elements are independent chains with chain_plate")
        if not common:
            self.num_chains, self.plate_dim = 1, None
            return None
        name = common.pop()
        frame = plates(latent[0])[name]
        if frame.full_size != frame.size:
            raise ValueError(f"plate {name!r} is subsampled; ShortRunLangevin needs the whole "
                             "batch in every call")
        self.num_chains, self.plate_dim = frame.size, frame.dim
        return name

    # -- packing: {site: value} <-> [*replicas, chains, dim] --
    def pack(self, values, replicas=0):
        parts = []
        for s in self.sites:
            v = values[s.name]
            lead = v.shape[:replicas]
            v = v.reshape(tuple(lead) + s.shape)
            if s.batch_dim is not None:
                v = v.movedim(replicas + s.batch_dim, replicas)
            parts.append(v.reshape(*lead, self.num_chains, s.size))
        return torch.cat(parts, -1)

    def unpack(self, position, pad=False):
        """position: [*replicas, chains, dim] -> {site: [*replicas, (ones if pad), *shape]}"""
        lead = position.shape[:-2]
        if self._whole is not None and not (pad and lead):
            # one [chains, dim] site: the position is its value (no view ops for autograd)
            return {self._whole: position}
        out, start = {}, 0
        for s in self.sites:
            flat = position[..., start:start + s.size]
            start += s.size
            if s.batch_dim is None:
                v = flat.reshape(tuple(lead) + s.shape)
            else:
                moved = (s.shape[s.batch_dim],) + s.shape[:s.batch_dim] + s.shape[s.batch_dim + 1:]
                v = flat.reshape(*lead, *moved).movedim(len(lead), len(lead) + s.batch_dim)
            if pad and lead:
                batch_rank = len(s.shape) - s.event_dim
                v = v.reshape(tuple(lead) + (1,) * (self.max_plate_nesting - batch_rank) + s.shape)
            out[s.name] = v
        return out

    # -- log densities: [*replicas, chains] --
    def _replicated(self, replicas):
        if not replicas:
            return self.model
        dim = -(self.max_plate_nesting + 1)

        def model(*args, **kwargs):
            with pyro.plate("_replicas", replicas, dim=dim):
                return self.model(*args, **kwargs)

        return model

    def _per_chain(self, log_prob, replicas):
        rank = self.max_plate_nesting + (1 if replicas else 0)
        log_prob = log_prob.reshape((1,) * (rank - log_prob.dim()) + tuple(log_prob.shape))
        keep = [0] if replicas else []
        if self.plate is not None:
            keep.append(rank + self.plate_dim)
        drop = [d for d in range(rank) if d not in keep]
        out = log_prob.sum(drop) if drop else log_prob
        if replicas:
            out = out.expand(replicas, *out.shape[1:])
        if self.plate is None:
            out = out.unsqueeze(-1)
        return out.expand(*((replicas,) if replicas else ()), self.num_chains)

    def log_density(self, position, args, kwargs):
        replicas = position.shape[0] if position.dim() == 3 else 0
        if self.fast:
            return self.model.log_joint_terms(self.unpack(position), *args, **kwargs)
        values = self.unpack(position, pad=True)
        model = poutine.condition(self._replicated(replicas), data=values)
        trace = poutine.trace(model).get_trace(*args, **kwargs)
        trace.compute_log_prob()
        log_prior = log_lik = 0.0
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            term = self._per_chain(site["log_prob"], replicas)
            if site["name"] in values:
                log_prior = log_prior + term
            else:
                log_lik = log_lik + term
        if isinstance(log_lik, float):
            log_lik = torch.zeros_like(log_prior)
        return log_prior, log_lik

    def log_prior(self, position, args, kwargs):
        if self.fast:
            return self.model.log_prior_terms(self.unpack(position), *args, **kwargs)
        return self.log_density(position, args, kwargs)[0]

    def prior_draw(self, replicas, args, kwargs):
        trace = poutine.trace(self._replicated(replicas)).get_trace(*args, **kwargs)
        values = {name: trace.nodes[name]["value"].detach() for name in self.names}
        if replicas:
            values = {name: v.expand(replicas, *v.shape[1:]) for name, v in values.items()}
        return self.pack(values, replicas=1 if replicas else 0)


class _PotentialTarget:
    """A user's ``potential_fn(params) -> potential energy`` (one chain, no prior split)."""

    fast = False
    num_chains = 1

    def __init__(self, potential_fn, initial_params):
        if not initial_params:
            raise ValueError("a potential_fn needs initial_params to know the sites' shapes")
        self.potential_fn = potential_fn
        self.names = sorted(initial_params)
        self.shapes = {k: tuple(v.shape) for k, v in initial_params.items()}
        first = initial_params[self.names[0]]
        self.dtype, self.device = first.dtype, first.device

    def pack(self, values, replicas=0):
        if replicas:
            raise ValueError("replica chains need a model, not a potential_fn")
        return torch.cat([values[k].reshape(1, -1) for k in self.names], -1)

    def unpack(self, position, pad=False):
        if position.dim() != 2:
            raise ValueError("replica chains need a model, not a potential_fn")
        out, start = {}, 0
        for k in self.names:
            size = math.prod(self.shapes[k])
            out[k] = position[0, start:start + size].reshape(self.shapes[k])
            start += size
        return out

    def log_density(self, position, args, kwargs):
        log_p = -self.potential_fn(self.unpack(position)).reshape(1)
        return log_p, torch.zeros_like(log_p)


# ------------------------------------------------------------------------------------------


class RunStats(NamedTuple):
    """Summary of one :meth:`ShortRunLangevin.infer` call (tensors, left on the device)."""

    divergences: torch.Tensor  # [*replicas, chains] steps that diverged
    acceptance: torch.Tensor  # [*replicas, chains] mean acceptance probability
    log_prior: torch.Tensor  # [*replicas, chains] at the final state
    log_likelihood: torch.Tensor


class ShortRunLangevin(MCMCKernel):
    r"""Short-run (non-persistent) Langevin dynamics, one chain per element of the model's
    batch plate (one per image), all advanced together as one tensor.

    Use it two ways:

    - ``kernel.infer(x)``: one short run from a fresh start, ``num_steps`` transitions, for the
      whole batch; what the training loop calls. ``num_chains=C`` adds ``C`` replica chains as a
      leading dimension.
    - ``pyro.infer.MCMC(kernel, num_samples=...)``: every ``sample()`` is one transition, and
      ``az.from_pyro`` of the result has ``posterior``, ``sample_stats``, ``log_likelihood``
      and ``observed_data``.

    The log density comes from the model: a model with ``log_joint_terms`` /
    ``log_prior_terms`` methods (as :class:`~pyro_sparsegen.SparseGenerator`) is evaluated
    through them, any other Pyro model through a conditioned trace of itself. Latent sites must
    be real-valued.

    :param model: a Pyro model; give this or ``potential_fn``.
    :param potential_fn: ``params -> potential energy`` (negative log density); needs
        ``initial_params``; one chain.
    :param float step_size: ``delta``; the drift is ``delta^2 / 2`` times the gradient.
    :param int num_steps: transitions in one :meth:`infer` call (``K``).
    :param bool noise: ``False`` turns the dynamics into gradient ascent on the log posterior
        (the authors' setting for learning).
    :param str init: start of :meth:`infer` and of ``MCMC`` chains: ``"zeros"``, ``"prior"``
        (a draw from the model) or ``"normal"`` (standard normal).
    :param bool metropolis: Metropolis-adjusted (MALA); accept/reject per chain.
    :param str prior_step: ``"explicit"`` or ``"semi-implicit"`` (see the module docstring).
    :param str chain_plate: name of the plate whose elements are independent chains; found
        automatically when a single plate holds every site.

    Example::

        >>> model = SparseGenerator(MLPGenerator(16), schedule=schedules.constant(0.1))
        >>> kernel = ShortRunLangevin(model, step_size=0.05, num_steps=30, noise=False)
        >>> z = kernel.infer(x)["z"]          # [images, 16]
        >>> mcmc = pyro.infer.MCMC(ShortRunLangevin(model), num_samples=100, warmup_steps=30)
        >>> mcmc.run(x)
    """

    def __init__(self, model=None, *, potential_fn=None, step_size=0.05, num_steps=30,
                 noise=True, init="zeros", metropolis=False, prior_step="explicit",
                 chain_plate=None):
        if (model is None) == (potential_fn is None):
            raise ValueError("give exactly one of model or potential_fn")
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Real) \
                or not math.isfinite(step_size) or step_size <= 0:
            raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) \
                or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if prior_step not in PRIOR_STEPS:
            raise ValueError(f"prior_step must be one of {PRIOR_STEPS}, got {prior_step!r}")
        if metropolis and not noise:
            raise ValueError("metropolis=True needs noise=True")
        if prior_step == "semi-implicit" and model is None:
            raise ValueError("prior_step='semi-implicit' needs a model (its prior term)")
        self.model = model
        self.potential_fn = potential_fn
        self.step_size = float(step_size)
        self.num_steps = int(num_steps)
        self.noise = bool(noise)
        self.init = init
        self.metropolis = bool(metropolis)
        self.prior_step = prior_step
        self.chain_plate = chain_plate
        self.transforms = None
        self._targets = {}
        self._initial_params = None
        self.last_run = None
        self._reset()
        super().__init__()

    def _reset(self):
        self._t = 0
        self._warmup_steps = 0
        self._state = None
        self._returned = None
        self._bound = None  # (target, init, step) of the chain being run
        self._diverging = []
        self._accept_sum = None
        self._accept_mean = float("nan")

    # -- targets --
    def _target(self, args, kwargs):
        if self.potential_fn is not None:
            if self._initial_params is None:
                raise ValueError("a potential_fn needs initial_params to know the sites' shapes")
            return _PotentialTarget(self.potential_fn, self._initial_params)
        key = (tuple(_signature(a) for a in args),
               tuple(sorted((k, _signature(v)) for k, v in kwargs.items())))
        target = self._targets.get(key)
        if target is None:
            target = _ModelTarget(self.model, args, kwargs, self.chain_plate)
            self._targets = {key: target}  # keep one: shapes rarely change within a run
        return target

    def _dynamics(self, args, kwargs):
        """``(target, init, step)`` for these model arguments: ``init(position) -> state`` and
        ``step(state) -> (state, info)`` are the core bound to the kernel's settings."""
        target = self._target(args, kwargs)

        def log_density_fn(position):
            return target.log_density(position, args, kwargs)

        curvature_fn = None
        if self.prior_step == "semi-implicit":
            curvature_fn = secant_curvature(lambda p: target.log_prior(p, args, kwargs))

        def init(position):
            return langevin_init(position, log_density_fn, self.step_size, curvature_fn)

        def step(state):
            return langevin_step(state, log_density_fn, self.step_size, noise=self.noise,
                                 metropolis=self.metropolis, curvature_fn=curvature_fn)

        return target, init, step

    def _start(self, target, replicas, args, kwargs):
        shape = ((replicas,) if replicas else ()) + (target.num_chains,
                                                     sum(s.size for s in target.sites))
        if self.init == "zeros":
            return torch.zeros(shape, dtype=target.dtype, device=target.device)
        if self.init == "normal":
            return torch.randn(shape, dtype=target.dtype, device=target.device)
        return target.prior_draw(replicas, args, kwargs)

    def log_density(self, latents, *args, **kwargs):
        """``(log_prior, log_likelihood)`` per chain (``[*replicas, chains]``) at ``latents``,
        as the kernel sees them."""
        target = self._target(args, kwargs)
        replicas = next(iter(latents.values())).dim() - len(target.sites[0].shape) \
            if isinstance(target, _ModelTarget) else 0
        return target.log_density(target.pack(latents, replicas), args, kwargs)

    # -- the fast call --
    def infer(self, *args, num_chains=None, **kwargs):
        """One short run from a fresh start: ``num_steps`` transitions for the whole batch.

        :param num_chains: if given, that many replica chains per image, as a leading
            dimension of every returned tensor.
        :return: ``{site: tensor}``, e.g. ``{"z": [images, latent_dim]}``; statistics of the
            run are in :attr:`last_run` (:class:`RunStats`).
        """
        if num_chains is not None and (isinstance(num_chains, bool) or not isinstance(
                num_chains, numbers.Integral) or num_chains < 1):
            raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}")
        replicas = int(num_chains or 0)
        with pyro.validation_enabled(False):
            target, init, step = self._dynamics(args, kwargs)
            state = init(self._start(target, replicas, args, kwargs))
            diverging, accept_prob = [], []
            for _ in range(self.num_steps):
                state, info = step(state)
                diverging.append(info.diverging)
                accept_prob.append(info.accept_prob)
        # summed once at the end: two kernels instead of two per step
        self.last_run = RunStats(torch.stack(diverging).sum(0), torch.stack(accept_prob).mean(0),
                                 state.log_prior, state.log_likelihood)
        return target.unpack(state.position)

    def sample_chains(self, *args, num_chains=4, num_draws=200, warmup_steps=None,
                      thin=1, **kwargs):
        """Replica chains per image, vectorised in one tensor: ``warmup_steps`` transitions
        (default ``num_steps``) from a fresh start, then ``num_draws`` kept draws, one every
        ``thin`` transitions.

        :return: ``(samples, stats)``: ``samples[site]`` is ``[chains, draws, *site_shape]``;
            ``stats`` has ``log_prior``, ``log_likelihood``, ``accept_prob`` and ``diverging``
            (per draw, ``[chains, draws, plate]``; a thinned draw is diverging when any of its
            transitions was, and ``accept_prob`` is their mean).
        """
        for name, value, low in (("num_chains", num_chains, 1), ("num_draws", num_draws, 1),
                                 ("thin", thin, 1),
                                 ("warmup_steps", self.num_steps if warmup_steps is None
                                  else warmup_steps, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        warmup_steps = self.num_steps if warmup_steps is None else int(warmup_steps)
        draws, stats = [], {k: [] for k in ("log_prior", "log_likelihood", "accept_prob",
                                            "diverging")}
        with pyro.validation_enabled(False):
            target, init, step = self._dynamics(args, kwargs)
            state = init(self._start(target, num_chains, args, kwargs))
            for i in range(warmup_steps + num_draws * thin):
                state, info = step(state)
                if i < warmup_steps:
                    continue
                j = (i - warmup_steps) % thin
                accept = info.accept_prob / thin if j == 0 else accept + info.accept_prob / thin
                diverging = info.diverging if j == 0 else diverging | info.diverging
                if j == thin - 1:
                    draws.append(state.position)
                    stats["log_prior"].append(state.log_prior)
                    stats["log_likelihood"].append(state.log_likelihood)
                    stats["accept_prob"].append(accept)
                    stats["diverging"].append(diverging)
        position = torch.stack(draws, 1)  # [chains, draws, plate, dim]
        flat = position.reshape(-1, *position.shape[2:])
        samples = {k: v.reshape(num_chains, num_draws, *v.shape[1:])
                   for k, v in target.unpack(flat).items()}
        return samples, {k: torch.stack(v, 1) for k, v in stats.items()}

    # -- the MCMCKernel contract --
    @property
    def initial_params(self):
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params):
        self._initial_params = params

    def setup(self, warmup_steps, *args, **kwargs):
        self._reset()
        self._warmup_steps = warmup_steps
        self._bound = self._dynamics(args, kwargs)
        target = self._bound[0]
        self.transforms = {name: biject_to(constraints.real) for name in target.names}
        if self._initial_params is None:
            with pyro.validation_enabled(False):
                self._initial_params = target.unpack(self._start(target, 0, args, kwargs))

    def sample(self, params):
        target, init, step = self._bound
        with pyro.validation_enabled(False):
            state = self._state
            if state is None or params is not self._returned:
                state = init(target.pack({k: v.detach() for k, v in params.items()}))
            state, info = step(state)
        self._t += 1
        if self._t > self._warmup_steps:
            self._diverging.append(info.diverging.any())
            accept = info.accept_prob.mean()
            self._accept_sum = accept if self._accept_sum is None else self._accept_sum + accept
            if not accept.is_cuda:  # a free read on the CPU; never a sync on a GPU
                self._accept_mean = float(self._accept_sum) / len(self._diverging)
        self._state = state
        self._returned = target.unpack(state.position)
        return self._returned

    def logging(self):
        return OrderedDict([("step size", "{:.2e}".format(self.step_size)),
                            ("acc. prob", "{:.3f}".format(self._accept_mean))])

    def diagnostics(self):
        flags = torch.stack(self._diverging).tolist() if self._diverging else []
        rate = float(self._accept_sum) / len(flags) if flags else float("nan")
        return {"divergences": [i for i, flag in enumerate(flags) if flag],
                "acceptance rate": rate}

    def cleanup(self):
        self._reset()
        self._initial_params = None
