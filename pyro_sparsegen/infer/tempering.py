"""Replica exchange over the replica chains: pure functions on batched tensors.

Per element of the chain plate (per image) a *ladder* of inverse temperatures
``1 = beta_0 > beta_1 > ... > beta_{L-1} >= 0`` tempers the likelihood only: level ``l``
samples ``p(z) p(x | z)^beta_l`` (the prior untempered, so a hottest level at ``beta = 0``
samples the prior and moves freely between the modes a sparse code has). Every level takes
the kernel's own transition; then adjacent levels of one image exchange their states with
probability ``min(1, exp((beta_i - beta_{i+1}) (l_{i+1} - l_i)))`` (``l`` the log-likelihood),
which keeps every level's target exactly.

The swaps follow the non-reversible scheme of Syed, Bouchard-Cote, Deligiannidis & Doucet
(2021), *Non-Reversible Parallel Tempering*: the even pairs ``(0, 1), (2, 3), ...`` at even
transitions, the odd pairs at odd ones, so a state that moved up keeps moving up. Their
*round trips* (a state from the coldest level to the hottest and back) are the figure of
merit, and their schedule update places the levels at equal steps of the estimated
communication barrier (the cumulative swap rejection rate along the ladder), which equalises
the rejection rates: :func:`adapt_ladder`.

Replica rows are level-major: row ``r = l * K + k`` is level ``l`` of ladder ``k`` (``K``
independent ladders per image). The tempered density keeps the log-likelihood and its
gradient apart from the prior part (:class:`~pyro_sparsegen.infer.core.Density`), so a swap
re-tempers the two states by arithmetic, without evaluating the model again.

The stepping-stone estimate of the evidence (Xie, Lewis, Fan, Kuo & Chen 2011) comes with the
ladder: :func:`stepping_stone`.
"""

import math
from typing import NamedTuple, Optional

import torch

from .core import Density, LangevinState

DEFAULT_COLDEST_HOT = 1e-4  # the smallest non-zero beta of a default ladder (before adapting)


class Ladder(NamedTuple):
    """The inputs a tempered transition swaps with (``L`` levels, ``K`` ladders, ``N``
    chains per row).

    - ``beta``: ``[L, N]`` inverse temperatures, decreasing along the levels
    - ``log_u``: ``[L - 1, K, N]`` log-uniforms of the swap tests
    - ``parity``: ``[]`` int64, ``0``: swap the pairs ``(0, 1), (2, 3), ...``; ``1``: the pairs
      ``(1, 2), (3, 4), ...``
    - ``phase``: ``[L, K, N]`` int64 round-trip phase of the state at each level (0: not yet at
      the coldest level, 1: left the coldest, 2: reached the hottest since), moved with it
    - ``prior``: ``[K, N, D]`` independent prior draws (unconstrained) for the hottest level,
      or ``None``: when its ``beta`` is 0 its target is the prior, and the draw replaces its
      Langevin proposal (an exact Gibbs move: the hot end forgets its state every transition)
    """

    beta: torch.Tensor
    log_u: torch.Tensor
    parity: torch.Tensor
    phase: torch.Tensor
    prior: Optional[torch.Tensor] = None


class SwapInfo(NamedTuple):
    """What a swap step did: ``accept_prob`` ``[L - 1, K, N]`` of every adjacent pair (also
    the pairs not proposed this time: the ladder adapts from them), ``swapped`` ``[L - 1,
    K, N]``, ``phase`` ``[L, K, N]`` (the next one) and ``round_trip`` ``[K, N]`` (a state
    came back to the coldest level from the hottest)."""

    accept_prob: torch.Tensor
    swapped: torch.Tensor
    phase: torch.Tensor
    round_trip: torch.Tensor


def default_ladder(levels, num_chains, *, dtype=None, device=None):
    """``[L, N]``: ``beta_l = DEFAULT_COLDEST_HOT^(l / (L - 2))`` for ``l < L - 1`` and 0 at the
    top (``[1, 0]`` for two levels): geometric spacing suits a log-likelihood that grows by
    orders of magnitude from the prior to the posterior; :func:`adapt_ladder` then evens out
    the rejection rates."""
    if levels < 2:
        raise ValueError(f"a ladder needs at least 2 levels, got {levels}")
    if levels == 2:
        beta = torch.tensor([1.0, 0.0], dtype=dtype, device=device)
    else:
        steps = torch.arange(levels - 1, dtype=dtype, device=device) / (levels - 2)
        beta = torch.cat([DEFAULT_COLDEST_HOT ** steps, steps.new_zeros(1)])
    return beta.unsqueeze(-1).expand(levels, num_chains).clone()


def ladder_from(spec, num_chains, *, dtype=None, device=None):
    """``[L, N]`` from an ``int`` (:func:`default_ladder`) or a decreasing sequence of betas
    starting at 1 and ending at or above 0 (``[L]``, or ``[L, N]`` per chain)."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        return default_ladder(spec, num_chains, dtype=dtype, device=device)
    beta = torch.as_tensor(spec, dtype=dtype, device=device)
    if beta.dim() == 1:
        beta = beta.unsqueeze(-1).expand(beta.shape[0], num_chains)
    if beta.dim() != 2 or beta.shape[1] != num_chains or beta.shape[0] < 2:
        raise ValueError(f"tempering: a ladder is [levels >= 2] or [levels, {num_chains}], got "
                         f"{list(beta.shape)}")
    ok = (beta[0] == 1).all() & (beta[-1] >= 0).all() & (beta[1:] < beta[:-1]).all()
    if not bool(ok):  # a host read once, before the run
        raise ValueError("tempering: a ladder must decrease strictly from beta = 1 to a last "
                         "beta >= 0")
    return beta.clone()


def rows(beta, ladders):
    """``[L * K, N]`` per-row inverse temperatures from the ladder ``[L, N]``."""
    levels, n = beta.shape
    return beta.unsqueeze(1).expand(levels, ladders, n).reshape(levels * ladders, n)


def prior_refresh(position, ladder):
    """``(fresh [L * K, N, D], fresh_rows [L * K, N])`` for
    :func:`~pyro_sparsegen.infer.core.local_step`: ``ladder.prior`` at the hottest level's rows
    where its ``beta`` is 0 (``fresh_rows``; elsewhere ``fresh`` is ``position``, unused)."""
    levels = ladder.beta.shape[0]
    k = ladder.prior.shape[0]
    fresh = torch.cat([position[:(levels - 1) * k], ladder.prior.to(position.dtype)])
    return fresh, rows(ladder.beta, k) == 0


def _levels(tensor, levels):
    """``[L * K, ...] -> [L, K, ...]``."""
    return tensor.reshape((levels, tensor.shape[0] // levels) + tuple(tensor.shape[1:]))


def _gather_levels(tensor, partner, levels):
    """``tensor [L * K, N, ...]`` with each level's entry taken from level ``partner``."""
    if tensor is None:
        return None
    t = _levels(tensor, levels)
    index = partner.reshape(partner.shape + (1,) * (t.dim() - partner.dim())).expand(t.shape)
    return t.gather(0, index).reshape(tensor.shape)


def retemper(state, old, new):
    """``state`` (tempered at ``old`` ``[*R, N]``) tempered at ``new`` instead, by arithmetic
    on the kept log-likelihood and its gradient."""
    d = state.density
    shift = new - old
    density = d._replace(local=d.local + shift * d.observed,
                         grad=d.grad + shift.unsqueeze(-1) * d.grad_observed)
    return LangevinState(state.position, state.global_position, density)


def swap_levels(state, ladder):
    """One round of swaps between adjacent levels (the pairs ``ladder.parity`` picks), per
    image and ladder; the swapped states are re-tempered to their new level by arithmetic.

    :param state: :class:`~pyro_sparsegen.infer.core.LangevinState` with ``L * K`` replica
        rows (level-major) and a tempered density (``grad_observed`` kept).
    :return: ``(state, SwapInfo)``
    """
    beta = ladder.beta
    levels = beta.shape[0]
    d = state.density
    loglik = _levels(d.observed, levels)  # [L, K, N]
    b = beta.unsqueeze(1)  # [L, 1, N]
    log_ratio = (b[:-1] - b[1:]) * (loglik[1:] - loglik[:-1])
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
    accept_prob = log_ratio.clamp(max=0.0).exp()
    pair = torch.arange(levels - 1, device=beta.device)
    proposed = (pair % 2 == ladder.parity).reshape(-1, 1, 1)
    swapped = proposed & (ladder.log_u < log_ratio)
    no = torch.zeros_like(swapped[:1])
    up, down = torch.cat([swapped, no]), torch.cat([no, swapped])  # with level l + 1 / l - 1
    level = torch.arange(levels, device=beta.device).reshape(-1, 1, 1)
    partner = level + up.long() - down.long()  # [L, K, N]
    shift = (b - beta.unsqueeze(1).expand_as(partner).gather(0, partner)).reshape(d.local.shape)

    def move(t):
        return _gather_levels(t, partner, levels)

    observed, grad_observed = move(d.observed), move(d.grad_observed)
    density = Density(move(d.local) + shift * observed, d.shared, observed,
                      move(d.grad) + shift.unsqueeze(-1) * grad_observed, d.grad_global,
                      move(d.curvature), d.curvature_global, move(d.log_scale_ratio),
                      grad_observed)
    state = LangevinState(move(state.position), state.global_position, density)
    phase = ladder.phase.gather(0, partner)
    round_trip = phase[0] == 2
    hot = phase[-1]
    phase = torch.cat([torch.ones_like(phase[:1]), phase[1:-1],
                       torch.where(hot == 1, 2, hot).unsqueeze(0)]) if levels > 2 else \
        torch.stack([torch.ones_like(phase[0]), torch.where(hot == 1, 2, hot)])
    return state, SwapInfo(accept_prob, swapped, phase, round_trip)


def adapt_ladder(beta, rejection):
    """Syed et al.'s schedule update: the communication barrier ``Lambda(beta)`` estimated as
    the cumulative swap rejection rate along the ladder (piecewise linear in ``beta``), and
    the new levels at equal steps of it (the endpoints kept).

    :param beta: ``[L, N]`` decreasing.
    :param rejection: ``[L - 1, N]`` mean rejection probability of each adjacent pair.
    :return: ``[L, N]``
    """
    levels = beta.shape[0]
    b = beta.flip(0).transpose(0, 1)  # [N, L] increasing, hottest first
    # a floor keeps Lambda strictly increasing (a pair that never rejects still has a width)
    r = rejection.flip(0).transpose(0, 1).clamp(min=1e-6)
    barrier = torch.cat([torch.zeros_like(r[:, :1]), r.cumsum(-1)], -1)  # [N, L]
    fraction = torch.linspace(0, 1, levels, dtype=b.dtype, device=b.device)
    wanted = barrier[:, -1:] * fraction
    upper = torch.searchsorted(barrier, wanted.contiguous(), right=True).clamp(1, levels - 1)
    lo_c, hi_c = barrier.gather(-1, upper - 1), barrier.gather(-1, upper)
    lo_b, hi_b = b.gather(-1, upper - 1), b.gather(-1, upper)
    new = lo_b + ((wanted - lo_c) / (hi_c - lo_c)).clamp(0, 1) * (hi_b - lo_b)
    new = torch.cat([b[:, :1], new[:, 1:-1], b[:, -1:]], -1)
    return new.transpose(0, 1).flip(0).contiguous()


def ladder_rounds(warmup_steps, rounds=5):
    """The warm-up transitions after which the ladder is adapted: rounds of doubling length
    ending at half the warm-up (the second half lets the step sizes settle on the final
    ladder), e.g. ``[16, 48, 113, 242, 500]`` for ``warmup_steps = 1000``; fewer rounds
    when the warm-up is short."""
    half = warmup_steps // 2
    ends, total = [], 0
    for k in range(rounds):
        total = round(half * (2 ** (k + 1) - 1) / (2 ** rounds - 1))
        if total > (ends[-1] if ends else 0):
            ends.append(total)
    return ends


def stepping_stone(level_log_likelihood, beta):
    """The stepping-stone estimate of each image's log evidence ``log p(x)`` and its Monte
    Carlo standard error.

    ``log p(x) = sum_l log E_{beta_{l+1}}[p(x | z)^(beta_l - beta_{l+1})]``, each expectation
    a mean over the draws of the hotter level; it needs a hottest level at ``beta = 0`` (the
    prior, whose normaliser is 1): NaN otherwise. The error is the spread of the ``K``
    independent ladders' estimates (``std / sqrt(K)``), or, with one ladder, of four
    consecutive batches of its draws.

    :param level_log_likelihood: ``[K, S, L, N]`` log-likelihood of every level's state at
        ``S`` draws.
    :param beta: ``[L, N]``.
    :return: ``(log_evidence [N], mcse [N])``
    """
    ll = level_log_likelihood
    k, s = ll.shape[:2]
    if k == 1 and s >= 8:  # batches of consecutive draws stand in for ladders
        s = s // 4 * 4
        ll = ll[:, :s].reshape(4, s // 4, *ll.shape[2:])
        k, s = ll.shape[:2]
    gap = (beta[:-1] - beta[1:])  # [L - 1, N]
    terms = gap * ll[:, :, 1:]  # [K, S, L - 1, N]
    pooled = (terms.flatten(0, 1).logsumexp(0) - math.log(k * s)).sum(0)
    each = (terms.logsumexp(1) - math.log(s)).sum(1)  # [K, N]
    mcse = each.std(0) / math.sqrt(k) if k > 1 else torch.full_like(pooled, math.nan)
    hot = beta[-1] == 0
    nan = torch.full_like(pooled, math.nan)
    return torch.where(hot, pooled, nan), torch.where(hot, mcse, nan)
