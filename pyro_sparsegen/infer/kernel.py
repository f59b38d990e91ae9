"""``ShortRunLangevin``: the Pyro ``MCMCKernel`` adapter, and the fast calls ``infer`` and
``sample_chains``, on top of the functional core (:mod:`.core`), the target (:mod:`.target`),
the transition bound to it (:mod:`.transition`) and step-size adaptation (:mod:`.adaptation`)."""

import math
import numbers
from typing import NamedTuple, Optional

import torch

from . import adaptation, chains
from .contract import MCMCContract
from .core import MAX_ENERGY_ERROR, Options, draw_randoms
from .transition import Transition
from .target import ModelTarget, PotentialTarget

INITS = ("zeros", "prior", "normal")
PRIOR_STEPS = ("explicit", "semi-implicit")


class RunStats(NamedTuple):
    """Summary of one :meth:`ShortRunLangevin.infer` call (tensors, left on the device).

    ``mismatch`` is a device bool when this run checked the derived graph against the model's
    trace (``None`` otherwise); ``infer(sync=False)`` leaves acting on it to the caller."""

    divergences: torch.Tensor  # [*R, N] transitions that diverged
    acceptance: torch.Tensor  # [*R, N] mean acceptance probability of the chains' steps
    log_density: torch.Tensor  # [*R, N] each chain's log density at the final state
    log_likelihood: torch.Tensor  # [*R, N] its observed part
    mismatch: Optional[torch.Tensor] = None

    @property
    def log_prior(self):
        """``[*R, N]``: the latent part of each chain's log density (with Jacobians)."""
        return self.log_density - self.log_likelihood


def _signature(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device)
    if value is None or isinstance(value, (numbers.Number, str)):
        return value
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(_signature(v) for v in value)
    return ("object", id(value))


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class ShortRunLangevin(MCMCContract):
    r"""Short-run (non-persistent) Langevin dynamics for any Pyro model with continuous
    latents: one chain per element of the model's chain plate (one per image), all advanced
    together as one tensor.

    Use it two ways:

    - ``kernel.infer(x)``: one short run from a fresh start, ``num_steps`` transitions, for the
      whole batch (what training calls); returns constrained values. ``num_chains=C`` adds
      ``C`` replica chains as a leading dimension. With ``noise=False`` it is MAP
      optimisation in the unconstrained space (Jacobians included).
    - ``pyro.infer.MCMC(kernel, num_samples=..., warmup_steps=...)``: every ``sample()`` is
      one transition; the warm-up adapts the step sizes; ``az.from_pyro`` of the result has
      ``posterior``, ``sample_stats``, ``log_likelihood`` and ``observed_data``.

    Constrained sites move in the unconstrained space through ``biject_to(support)`` (fixed
    from the first trace, as in Pyro's HMC) with each site's ``log|det J|`` in the density.
    Latent sites outside the chain plate form a global block updated by its own Langevin step
    given the chains (Metropolis-within-Gibbs), with its own step size. Discrete latents are
    refused.

    Settings and what they sample (see the README):

    - ``metropolis=True`` (MALA): exact; accept/reject per chain; with a scale-mixture prior
      (:class:`~pyro_sparsegen.SpikeAndSlab`) a crossing move jumps one coordinate per chain
      between spike and slab every transition (``crossing``), and a pair move swaps the values
      of two scale-mixture coordinates of one chain (``pair_move``: one twin of a pair of
      near-duplicate dictionary columns for the other, which no one-coordinate move does);
    - ``tempering`` (with ``metropolis=True``, in :meth:`sample_chains`): replica exchange,
      every chain a ladder of inverse temperatures ``1 = beta_0 > ... > beta_{L-1} >= 0`` on
      the likelihood (level ``l`` samples ``prior x likelihood^beta_l``), adjacent levels
      swapping states (:mod:`~pyro_sparsegen.infer.tempering`); the kept draws are the
      ``beta = 1`` level's, the posterior, and the ladder gives each image's evidence;
    - ``noise=True, metropolis=False, prior_step="explicit"`` (ULA, the paper's sampler): biased
      by the step size (on ``N(0, s^2)`` the stationary variance is ``s^2 / (1 - delta^2 /
      (4 s^2))``);
    - ``noise=False``: an optimiser (MAP), not a sampler;
    - ``prior_step="semi-implicit"`` with noise needs ``metropolis=True``: unadjusted it
      samples a wrong distribution, so it is refused.

    :param model: a Pyro model; give this or ``potential_fn``.
    :param potential_fn: ``params -> potential energy`` on unconstrained params; needs
        ``initial_params``; one chain.
    :param float step_size: ``delta`` (the initial value when adapting); the drift is
        ``delta^2 / 2`` times the gradient.
    :param int num_steps: transitions in one :meth:`infer` call (``K``).
    :param bool noise: ``False``: gradient ascent on the log density (the authors' setting
        for learning).
    :param str init: where runs start, in the unconstrained space: ``"zeros"``, ``"prior"``
        (a draw from the model) or ``"normal"``; ``None`` (default): zeros for :meth:`infer`,
        prior draws for ``MCMC`` and :meth:`sample_chains`.
    :param bool metropolis: Metropolis-adjusted (MALA), per chain.
    :param str prior_step: ``"explicit"`` or ``"semi-implicit"`` (preconditioned by
        ``1 / (1 + h kappa)`` on coordinates whose prior declares itself a zero-centred scale
        mixture; explicit elsewhere).
    :param str chain_plate: the plate whose elements are independent chains (default: found).
    :param adapt_step_size: adapt the step sizes during warm-up (``MCMC``,
        :meth:`sample_chains`), one per chain and one for the global block; default: on with
        ``metropolis=True``.
    :param float target_accept_prob: the adaptation's target (0.574, optimal for MALA).
    :param crossing: the spike/slab crossing move (default: on with ``metropolis=True`` when
        the model has a scale-mixture site).
    :param pair_move: the pair move (default: on with ``metropolis=True`` when the model has
        a scale-mixture site in the chain plate).
    :param tempering: ``None`` (off), the number of levels ``L >= 2`` (a geometric ladder
        from 1 down to ``1e-4``, then 0: :func:`~pyro_sparsegen.infer.tempering.default_ladder`)
        or a strictly decreasing sequence of betas from 1 to a last one ``>= 0`` (``[L]``, or
        ``[L, plate]`` per chain). Choosing it: the hottest level at 0 samples the prior,
        which moves freely between modes and is needed for the evidence; enough levels that
        every adjacent pair swaps often (the reported ``swap_accept_prob``; a few tens of
        percent is plenty) — more levels for a sharper likelihood (more pixels, less noise).
        Needs a model whose latent and observed sites are all in the chain plate (refused in
        one line otherwise); ``sample_chains`` only (``pyro.infer.MCMC`` refuses it).
    :param bool adapt_ladder: with tempering, move the levels during warm-up so that the swap
        rejection rates are equal along the ladder (Syed et al. 2021).
    :param bool adapt_pairs: in :meth:`sample_chains`' warm-up (of at least
        :data:`~pyro_sparsegen.infer.chains.PAIR_WARMUP` transitions), learn which coordinates
        explain each other away (negatively correlated values per chain-plate element) and,
        after it, let half of the pair moves draw a pair from that pick and transfer mass
        between the two or make a compensated crossing
        (:class:`~pyro_sparsegen.infer.adaptation.PairPick`; exact: the pick is fixed once
        the draws are kept).
    :param bool prior_refresh: with tempering, when the hottest level is at ``beta = 0`` (its
        target the prior), replace its Langevin step by an independent draw from the model's
        prior every transition (exact: a Gibbs move), so that the hot end forgets its state at
        once and states travel the ladder faster. Costs one run of the model's prior on
        ``num_chains`` rows per transition.
    :param bool compile: compile the transition with ``torch.compile``.
    :param bool derive: derive a graph of the transition from the model (faster; checked
        against the model's trace); ``False`` runs the model through Pyro at every step. A
        :meth:`sample_chains` run of fewer than
        :data:`~pyro_sparsegen.infer.chains.SHORT_RUN` transitions runs through Pyro either
        way (the tracing would cost more than it saves).

    Example::

        >>> model = SparseGenerator(MLPGenerator(16), schedule=schedules.constant(0.1))
        >>> kernel = ShortRunLangevin(model, step_size=0.05, num_steps=30, noise=False)
        >>> z = kernel.infer(x)["z"]          # [images, 16]
        >>> mcmc = pyro.infer.MCMC(ShortRunLangevin(model, metropolis=True), num_samples=100,
        ...                        warmup_steps=100)
        >>> mcmc.run(x)
    """

    def __init__(self, model=None, *, potential_fn=None, step_size=0.05, num_steps=30,
                 noise=True, init=None, metropolis=False, prior_step="explicit",
                 chain_plate=None, adapt_step_size=None,
                 target_accept_prob=adaptation.TARGET_ACCEPT_PROB, crossing=None,
                 compile=False, derive=True, max_energy_error=MAX_ENERGY_ERROR,
                 pair_move=None, tempering=None, adapt_ladder=True, prior_refresh=True,
                 adapt_pairs=True):
        if (model is None) == (potential_fn is None):
            raise ValueError("give exactly one of model or potential_fn")
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Real) \
                or not math.isfinite(step_size) or step_size <= 0:
            raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
        num_steps = _check_int("num_steps", num_steps, 1)
        if init is not None and init not in INITS:
            raise ValueError(f"init must be one of {INITS} or None, got {init!r}")
        if prior_step not in PRIOR_STEPS:
            raise ValueError(f"prior_step must be one of {PRIOR_STEPS}, got {prior_step!r}")
        if metropolis and not noise:
            raise ValueError("metropolis=True needs noise=True")
        if noise and not metropolis and prior_step == "semi-implicit":
            raise ValueError(
                "the semi-implicit step with noise and no Metropolis correction samples a wrong "
                "distribution (its noise is scaled by P, not sqrt(P)); use noise=False (MAP), "
                "metropolis=True (exact MALA) or prior_step='explicit' (ULA)")
        if adapt_step_size and not metropolis:
            raise ValueError("adapt_step_size=True needs metropolis=True (it adapts towards an "
                             "acceptance rate)")
        if not 0 < target_accept_prob < 1:
            raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob}")
        if crossing and not metropolis:
            raise ValueError("crossing=True needs metropolis=True (it is a Metropolis move)")
        if pair_move and not metropolis:
            raise ValueError("pair_move=True needs metropolis=True (it is a Metropolis move)")
        if tempering is not None and not metropolis:
            raise ValueError("tempering needs metropolis=True (every level must be exact)")
        if isinstance(tempering, numbers.Integral) and not isinstance(tempering, bool):
            tempering = _check_int("tempering", tempering, 2)
        elif tempering is not None:
            tempering = [float(b) for b in tempering] if not isinstance(
                tempering, torch.Tensor) else tempering
        self.model = model
        self.potential_fn = potential_fn
        self.step_size = float(step_size)
        self.num_steps = num_steps
        self.noise = bool(noise)
        #: where runs start (``None``: zeros for :meth:`infer`, prior draws otherwise)
        self.init = init
        self.metropolis = bool(metropolis)
        self.prior_step = prior_step
        self.chain_plate = chain_plate
        #: whether warm-up adapts the step sizes
        self.adapt_step_size = self.metropolis if adapt_step_size is None else \
            bool(adapt_step_size)
        self.target_accept_prob = float(target_accept_prob)
        self.crossing = crossing
        self.pair_move = pair_move
        #: the replica-exchange ladder asked for (``None``: off)
        self.tempering = tempering
        #: whether warm-up adapts the ladder
        self.adapt_ladder = bool(adapt_ladder)
        #: whether :meth:`sample_chains`' warm-up learns the pair move's pick
        self.adapt_pairs = bool(adapt_pairs)
        self.prior_refresh = bool(prior_refresh)
        self.compile = bool(compile)
        self.derive = bool(derive)
        self.max_energy_error = float(max_energy_error)
        self.transforms = None
        #: the :class:`RunStats` of the last :meth:`infer` call
        self.last_run = None
        #: every MCMC chain's :meth:`diagnostics`, appended in order
        self.chain_stats = []
        self._targets = {}
        self._transitions = {}
        self._initial_params = None
        self._reset()
        super().__init__()

    def __getstate__(self):  # derived graphs do not pickle (MCMC runs chains in processes)
        state = self.__dict__.copy()
        state["_targets"], state["_transitions"], state["_mcmc"] = {}, {}, None
        state["_state"] = state["_returned"] = None
        return state

    def _reset(self):
        self._t = 0
        self._warmup_steps = 0
        self._mcmc = None
        self._state = None
        self._returned = None
        self._steps = None
        self._adapt = None
        self._draws = []
        self._diverging = []
        self._accept_mean = float("nan")
        self._step_mean = self.step_size
        self._host = None

    # -- targets and their dynamics --
    def target(self, args=(), kwargs=None, replicas=0):
        """The target (the model as the core's density) for these model arguments: built once per
        argument signature (shapes, dtypes, devices) and cached; ``replicas`` > 0 adds a leading
        replica dim of that size."""
        kwargs = {} if kwargs is None else kwargs
        if self.potential_fn is not None:
            if replicas:
                raise ValueError("replica chains need a model, not a potential_fn")
            if self._initial_params is None:
                raise ValueError("a potential_fn needs initial_params to know the sites' shapes")
            key = ("potential", tuple(sorted((k, _signature(v))
                                             for k, v in self._initial_params.items())))
            if key not in self._targets:
                self._targets = {key: PotentialTarget(self.potential_fn, self._initial_params)}
            return self._targets[key]
        key = (tuple(_signature(a) for a in args),
               tuple(sorted((k, _signature(v)) for k, v in kwargs.items())), replicas)
        target = self._targets.get(key)
        if target is None:
            target = ModelTarget(self.model, args, kwargs, self.chain_plate, replicas)
            if len(self._targets) >= 8:  # shapes rarely change; keep a few
                self._targets.pop(next(iter(self._targets)))
            self._targets[key] = target
        return target

    def options(self, target, tempered=False):
        """The core's :class:`~pyro_sparsegen.infer.core.Options` for a target."""
        crossing = self.metropolis and bool(target.mixture_index.numel()) \
            if self.crossing is None else bool(self.crossing)
        pair_index = getattr(target, "pair_sites", (target.mixture_index,))[0]
        pairs = self.metropolis and bool(pair_index.numel()) \
            if self.pair_move is None else bool(self.pair_move)
        return Options(noise=self.noise, metropolis=self.metropolis,
                       precondition=self.prior_step == "semi-implicit", crossing=crossing,
                       max_energy_error=self.max_energy_error, pairs=pairs,
                       tempered=bool(tempered))

    def transition(self, target, args=(), kwargs=None, tempered=False, derive=None):
        """The :class:`~pyro_sparsegen.infer.transition.Transition` of a target (built once per
        target and settings), bound to these model arguments; ``derive=False`` runs this one
        through Pyro whatever the kernel's ``derive`` (a run too short to pay for a graph)."""
        options = self.options(target, tempered)
        derive = self.derive and derive is not False
        key = (id(target), options, self.compile, derive)
        dyn = self._transitions.get(key)
        if dyn is None or dyn.target is not target:
            dyn = Transition(target, options, derive=derive, compile=self.compile)
            if len(self._transitions) >= 8:
                self._transitions.pop(next(iter(self._transitions)))
            self._transitions[key] = dyn
        dyn.bind(args, kwargs or {})
        return dyn

    def dynamics(self, *args, **kwargs):
        """The former name of :meth:`transition` (deprecated)."""
        import warnings

        warnings.warn("ShortRunLangevin.dynamics is deprecated: use ShortRunLangevin.transition",
                      DeprecationWarning, stacklevel=2)
        return self.transition(*args, **kwargs)

    @property
    def transitions(self):
        """The transitions built so far (one per target and options; a few are kept), e.g. to
        read a compiled one's ``compile_seconds``."""
        return tuple(self._transitions.values())

    def graph_went_stale(self):
        """A caller of ``infer(sync=False)`` found a run's check failed: every derived graph
        is derived again (and given up after a second time)."""
        for dyn in self._transitions.values():
            if dyn.using_graph:
                dyn.mismatch_found()

    def start_position(self, target, init, args, kwargs):
        """Where a run starts, unconstrained ``(position, global_position)``: ``init`` is
        ``"zeros"``, ``"prior"`` (a draw from the model) or ``"normal"``."""
        if init == "prior":
            return target.prior_free(args, kwargs)
        position, global_position = target.zeros()
        if init == "normal":
            position, global_position = torch.randn_like(position), \
                torch.randn_like(global_position)
        return position, global_position

    def initial_step_sizes(self, target, dyn, state):
        """Per-chain step sizes ``[*R, N]`` and the global block's ``[*R]``, the latter scaled
        to the block's curvature so that the explicit step is stable there."""
        lead = state.position.shape[:-1]
        local = torch.full(lead, self.step_size, dtype=target.dtype, device=target.device)
        step = torch.full(lead[:-1], self.step_size, dtype=target.dtype, device=target.device)
        if target.global_size:
            curvature = self._global_curvature(target, dyn, state)
            step = torch.minimum(step, curvature.clamp(min=1e-12).rsqrt())
        return local, step

    def _global_curvature(self, target, dyn, state):
        """``[*R]``: the largest diagonal curvature ``-d2 log p / dg2`` of the global block,
        by finite differences of the gradient (exact per coordinate for up to 4 coordinates,
        else from one Rademacher probe)."""
        density = dyn.bound_density()
        g, grad = state.global_position, state.density.grad_global
        h = 1e-3 * (1.0 + g.abs())
        size = target.global_size
        with torch.no_grad():
            if size <= 4:
                rows = []
                for i in range(size):
                    e = torch.zeros_like(g)
                    e[..., i] = h[..., i]
                    moved = density(state.position, g + e).grad_global[..., i]
                    rows.append(-(moved - grad[..., i]) / h[..., i])
                kappa = torch.stack(rows, -1)
            else:
                v = torch.randint(0, 2, g.shape, device=g.device).to(g.dtype) * 2 - 1
                moved = density(state.position, g + h * v).grad_global
                kappa = (-(moved - grad) * v / h)
        return kappa.nan_to_num(nan=0.0, posinf=1e30).amax(-1)

    # -- warm-up adaptation --
    def step_size_adaptation(self, steps):
        """Dual averaging of both blocks' step sizes from ``steps = (local, global)``, or
        ``None`` when the kernel does not adapt."""
        if not self.adapt_step_size:
            return None
        return tuple(adaptation.dual_averaging_init(s) for s in steps)

    def adapt_step_sizes(self, adapt, info, final):
        """One warm-up update from a transition's acceptance: ``(adapt, (local, global) step
        sizes)``; on the ``final`` warm-up transition the averaged iterates, kept from then
        on."""
        probs = (info.accept_prob, info.global_accept_prob)
        adapt = tuple(adaptation.dual_averaging_update(a, p, self.target_accept_prob)
                      for a, p in zip(adapt, probs))
        steps = tuple(adaptation.dual_averaging_final(a) if final else a.step_size
                      for a in adapt)
        return adapt, steps

    # -- the fast call --
    def log_density(self, latents, *args, **kwargs):
        """``(log density, log-likelihood)`` per chain (``[*R, N]``) at constrained
        ``latents`` (``{site: value}``, with an optional leading replica dim on every site),
        as the kernel sees them (Jacobians included)."""
        target = self.target(args, kwargs)
        first = target.sites[0] if hasattr(target, "sites") else None
        replicas = 0
        if first is not None:
            value = latents[first.name]
            replicas = value.shape[0] if value.dim() > len(first.shape) else 0
            if replicas:
                target = self.target(args, kwargs, replicas)
        free = target.unconstrain(latents) if hasattr(target, "unconstrain") else latents
        position, global_position = target.pack_free(free, replicas=replicas)
        d = target.density(position, global_position, args, kwargs)
        return d.local, d.observed

    def infer(self, *args, num_chains=None, sync=True, **kwargs):
        """One short run from a fresh start (:attr:`init`, default zeros): ``num_steps``
        transitions for the whole batch at the kernel's step size.

        :param num_chains: if given, that many replica chains per image, as a leading
            dimension of every returned tensor.
        :param bool sync: act at once when this run's check of the derived graph against the
            model's trace fails (rerun through the trace); ``False`` leaves it, as a device
            flag in :attr:`last_run`, to the caller (no host read: the training loop).
        :return: ``{site: constrained value}``, e.g. ``{"z": [images, latent_dim]}``;
            statistics of the run are in :attr:`last_run` (:class:`RunStats`).
        """
        replicas = 0 if num_chains is None else _check_int("num_chains", num_chains, 1)
        target = self.target(args, kwargs, replicas)
        dyn = self.transition(target, args, kwargs)
        position, global_position = self.start_position(target, self.init or "zeros", args, kwargs)
        state, mismatch = dyn.begin(position, global_position)
        local_step, global_step = self.initial_step_sizes(target, dyn, state)
        options = dyn.options
        divergences = accept = None
        for _ in range(self.num_steps):
            randoms = draw_randoms(state, options, target.mixture_index, target.global_size > 0,
                                   getattr(target, "pair_sites", None))
            state, info = dyn.step(state, randoms, local_step, global_step)
            if divergences is None:
                divergences, accept = info.diverging.to(torch.int32), info.accept_prob.clone()
            else:
                divergences.add_(info.diverging)
                accept.add_(info.accept_prob)
        if mismatch is not None and sync and bool(mismatch):
            dyn.mismatch_found()
            return self.infer(*args, num_chains=num_chains, sync=sync, **kwargs)
        d = state.density
        self.last_run = RunStats(divergences, accept / self.num_steps, d.local, d.observed,
                                 mismatch)
        return target.values(state.position, state.global_position)

    def sample_chains(self, *args, num_chains=4, num_draws=200, warmup_steps=None, thin=1,
                      initial=None, **kwargs):
        """Replica chains per image, vectorised in one tensor: ``warmup_steps`` transitions
        (default ``num_steps``; they adapt the step sizes when :attr:`adapt_step_size`) from
        :attr:`init` (default: prior draws), then ``num_draws`` kept draws, one every
        ``thin`` transitions.

        With :attr:`tempering` every chain is a ladder of ``L`` levels (replica exchange,
        :mod:`~pyro_sparsegen.infer.tempering`): ``num_chains`` independent ladders per image,
        ``num_chains * L`` rows in one tensor, every level taking the kernel's transition with
        its own adapted step size, then a swap step between adjacent levels; with
        :attr:`adapt_ladder` the warm-up also moves the levels (rounds of doubling length in its
        first half) so that the swap rejection rates are equal. Only the coldest level
        (``beta = 1``, the posterior) is returned.

        :param initial: where the chains start instead: constrained values ``{site: [chains,
            *site_shape]}`` (e.g. ``infer(..., num_chains=C)`` of a noise-free kernel); with
            tempering every level of a ladder starts there.
        :return: ``(samples, stats)``: ``samples[site]`` is ``[chains, draws, *site_shape]``
            (constrained); ``stats`` has ``log_density``, ``log_likelihood``,
            ``accept_prob``, ``diverging`` and ``step_size`` (``[chains, draws, plate]``; a
            thinned draw is diverging when any of its transitions was, and ``accept_prob``
            is their mean), ``global_step_size`` (``[chains]``) and ``options`` (the core's
            :class:`~pyro_sparsegen.infer.core.Options` it ran with). Tempered, also
            ``beta`` (``[levels, plate]``, the adapted ladder), ``swap_accept_prob``
            (``[levels - 1, plate]``: mean swap acceptance probability of each adjacent pair
            over the kept transitions), ``round_trips`` (``[chains, plate]``: states that went
            from the coldest level to the hottest and back, during the kept transitions),
            ``level_log_likelihood`` (``[chains, draws, levels, plate]``) and
            ``log_marginal_likelihood`` / ``log_marginal_likelihood_mcse`` (``[plate]``: the
            stepping-stone estimate of ``log p(x)`` per image and its Monte Carlo error, see
            :func:`~pyro_sparsegen.infer.tempering.stepping_stone`; NaN unless the hottest
            level is at ``beta = 0``).
        """
        num_chains = _check_int("num_chains", num_chains, 1)
        num_draws = _check_int("num_draws", num_draws, 1)
        thin = _check_int("thin", thin, 1)
        warmup_steps = self.num_steps if warmup_steps is None else \
            _check_int("warmup_steps", warmup_steps, 0)
        return chains.sample_chains(self, args, kwargs, num_chains=num_chains,
                                    num_draws=num_draws, warmup_steps=warmup_steps, thin=thin,
                                    initial=initial)
