"""Replica chains per image in one tensor, optionally as ladders of replica exchange: the run
behind :meth:`ShortRunLangevin.sample_chains <pyro_sparsegen.ShortRunLangevin.sample_chains>`.

Everything stays on the data's device; nothing in the loop reads the host (the ladder's
adaptation, the swaps and their statistics are tensor arithmetic).
"""

import torch

from . import tempering
from .adaptation import PairPick
from .core import draw_randoms

POOL = 64  # transitions' worth of the hottest level's prior draws drawn at once
#: Runs of fewer transitions go through Pyro at every step: deriving a graph costs 0.5-1 s
#: (tracing the model), which its cheaper steps repay after about 200 transitions on a small
#: model and never on a large one, where the step's arithmetic dominates (benchmarks.md).
SHORT_RUN = 200
#: The pair move's pick is learned from the coldest states of the warm-up's second quarter
#: (after the first, which leaves the starts) on, used from its half and re-learned at its end;
#: a warm-up shorter than this keeps the uniform pick.
PAIR_WARMUP = 100
PER_DRAW = ("log_density", "log_likelihood", "accept_prob", "diverging", "step_size")


class _Ladders:
    """The tempering state of a run: ``L`` levels of ``K`` ladders per chain."""

    def __init__(self, spec, ladders, target, adapt, warmup_steps, prior_target=None):
        n = target.num_chains
        # POOL * K replicas: the hottest level's prior draws, drawn POOL transitions at a time
        # (one run of the model for many transitions: its Python cost is the larger part)
        self.prior_target, self._pool, self._used = prior_target, None, POOL
        self.beta = tempering.ladder_from(spec, n, dtype=target.dtype, device=target.device)
        self.levels, self.ladders = self.beta.shape[0], ladders
        device = target.device
        self.parity = (torch.zeros((), dtype=torch.long, device=device),
                       torch.ones((), dtype=torch.long, device=device))
        self.phase = torch.zeros((self.levels, ladders, n), dtype=torch.long, device=device)
        self.phase[0] = 1  # the coldest states have been at the coldest level
        self.rounds = set(tempering.ladder_rounds(warmup_steps)) if adapt else set()
        self.swap_sum = torch.zeros((self.levels - 1, ladders, n), dtype=target.dtype,
                                    device=device)
        self.count = 0
        self.round_trips = torch.zeros((ladders, n), dtype=torch.long, device=device)

    def rows(self):
        return tempering.rows(self.beta, self.ladders)

    def inputs(self, i, like, args, kwargs):
        log_u = torch.rand(self.swap_sum.shape, dtype=like.dtype, device=like.device).log()
        prior = None
        if self.prior_target is not None:
            if self._used == POOL:
                self._pool = self.prior_target.prior_free(args, kwargs)[0].reshape(
                    POOL, self.ladders, *like.shape[1:])
                self._used = 0
            prior = self._pool[self._used]
            self._used += 1
        return tempering.Ladder(self.beta, log_u, self.parity[i % 2], self.phase, prior)

    def for_adaptation(self, info, target_accept_prob):
        """``info`` with the refreshed rows' acceptance at the adaptation's target (their
        Langevin step is not taken: its step size stays where it is)."""
        if self.prior_target is None:
            return info
        fresh = self.rows() == 0
        return info._replace(accept_prob=torch.where(
            fresh, torch.full_like(info.accept_prob, target_accept_prob), info.accept_prob))

    def record(self, swap, sampling):
        self.phase = swap.phase
        self.swap_sum.add_(swap.accept_prob)
        self.count += 1
        if sampling:
            self.round_trips.add_(swap.round_trip)

    def adapt(self, state):
        """The schedule update from this round's swap rejections; returns the state
        re-tempered to the new ladder."""
        rejection = 1.0 - self.swap_sum.mean(1) / self.count
        old = self.rows()
        self.beta = tempering.adapt_ladder(self.beta, rejection)
        self.swap_sum.zero_()
        self.count = 0
        return tempering.retemper(state, old, self.rows())

    def stats(self, level_log_likelihood):
        evidence, mcse = tempering.stepping_stone(level_log_likelihood, self.beta)
        return {"beta": self.beta, "swap_accept_prob": (self.swap_sum / self.count).mean(1),
                "round_trips": self.round_trips, "level_log_likelihood": level_log_likelihood,
                "log_marginal_likelihood": evidence, "log_marginal_likelihood_mcse": mcse}


def sample_chains(kernel, args, kwargs, *, num_chains, num_draws, warmup_steps, thin, initial):
    """The run of :meth:`~pyro_sparsegen.ShortRunLangevin.sample_chains` (arguments checked
    there); see its text for what it returns."""
    spec = kernel.tempering
    levels = None if spec is None else (spec if isinstance(spec, int) else len(spec))
    rows = num_chains * (levels or 1)
    target = kernel.target(args, kwargs, rows)
    if levels is not None:
        if not hasattr(target, "check_temperable"):
            raise ValueError("tempering needs a model (its likelihood apart from its prior), "
                             "not a potential_fn")
        target.check_temperable()
    short = warmup_steps + num_draws * thin < SHORT_RUN
    dyn = kernel.transition(target, args, kwargs, tempered=levels is not None,
                            derive=False if short else None)
    ladder = None
    if levels is not None:
        prior_target = kernel.target(args, kwargs, POOL * num_chains) if kernel.prior_refresh \
            else None
        ladder = _Ladders(spec, num_chains, target, kernel.adapt_ladder, warmup_steps,
                          prior_target)
    if initial is None:
        position, global_position = kernel.start_position(target, kernel.init or "prior", args,
                                                          kwargs)
    else:
        free = target.unconstrain({k: v.detach() for k, v in initial.items()})
        if levels is not None:  # every level starts where its ladder's chain is told
            free = {k: v.repeat((levels,) + (1,) * (v.dim() - 1)) for k, v in free.items()}
        position, global_position = target.pack_free(free)
    state = dyn.start(position, global_position, None if ladder is None else ladder.rows())
    local_step, global_step = kernel.initial_step_sizes(target, dyn, state)
    adapt = kernel.step_size_adaptation((local_step, global_step)) if warmup_steps > 0 else None
    options = dyn.options
    draws, stats, levels_ll = [], {k: [] for k in PER_DRAW}, []
    accept = diverging = None
    k = num_chains  # the coldest level's rows (level-major), what is kept
    pair_sites = getattr(target, "pair_sites", None)
    pairs = PairPick(pair_sites, target.num_chains, target.dtype, target.device) \
        if options.pairs and kernel.adapt_pairs and warmup_steps >= PAIR_WARMUP else None
    pick = None
    for i in range(warmup_steps + num_draws * thin):
        randoms = draw_randoms(state, options, target.mixture_index, target.global_size > 0,
                               pair_sites, pick)
        if ladder is None:
            state, info = dyn.step(state, randoms, local_step, global_step)
        else:
            state, info, swap = dyn.step(state, randoms, local_step, global_step,
                                         ladder.inputs(i, state.position, args, kwargs))
            ladder.record(swap, sampling=i >= warmup_steps)
            info = ladder.for_adaptation(info, kernel.target_accept_prob)
        if i < warmup_steps:
            if adapt is not None:
                adapt, (local_step, global_step) = kernel.adapt_step_sizes(
                    adapt, info, final=i == warmup_steps - 1)
            if ladder is not None and i + 1 in ladder.rounds:
                state = ladder.adapt(state)
            if pairs is not None and i >= warmup_steps // 4:
                pairs.record(state.position[:k])
                if i + 1 in (warmup_steps // 2, warmup_steps):
                    pick = pairs.pick()
            if ladder is not None and i == warmup_steps - 1:
                ladder.swap_sum.zero_()  # the kept statistics count the kept transitions
                ladder.count = 0
            continue
        j = (i - warmup_steps) % thin
        accept = info.accept_prob[:k] / thin if j == 0 else accept + info.accept_prob[:k] / thin
        diverging = info.diverging[:k] if j == 0 else diverging | info.diverging[:k]
        if j == thin - 1:
            d = state.density
            draws.append((state.position[:k], state.global_position[:k]))
            stats["log_density"].append(d.local[:k])
            stats["log_likelihood"].append(d.observed[:k])
            stats["accept_prob"].append(accept)
            stats["diverging"].append(diverging)
            stats["step_size"].append(local_step[:k])
            if ladder is not None:
                levels_ll.append(d.observed.reshape(ladder.levels, k, -1).transpose(0, 1))
    position = torch.stack([p for p, _ in draws], 1)  # [chains, draws, N, D]
    g = torch.stack([g for _, g in draws], 1)
    flat = target.values(position.reshape(-1, *position.shape[2:]),
                         g.reshape(num_chains * num_draws, g.shape[-1]))
    samples = {name: v.reshape(num_chains, num_draws, *v.shape[1:]) for name, v in flat.items()}
    out = {name: torch.stack(v, 1) for name, v in stats.items()}
    out["global_step_size"] = global_step[:k]
    out["options"] = options
    if ladder is not None:
        out.update(ladder.stats(torch.stack(levels_ll, 1)))
    return samples, out

