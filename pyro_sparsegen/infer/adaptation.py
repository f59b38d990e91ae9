"""Warm-up adaptation of step sizes: dual averaging (Hoffman & Gelman 2014, as in Pyro's
``pyro.infer.mcmc.adaptation``), vectorised so that every chain (every element of the chain
plate, every replica) and every global block adapts its own step size, with no host-device
synchronisation.

Pure functions on a :class:`DualAveraging` state, as BlackJAX's ``adaptation.step_size``::

    state = dual_averaging_init(step_size)              # [*chains] tensor
    for accept_prob in warmup:
        state = dual_averaging_update(state, accept_prob, target=0.574)
        step_size = state.step_size
    step_size = dual_averaging_final(state)             # frozen after warm-up

and of the pair move's pick (:class:`PairPick`): which scale-mixture coordinates explain
each other away, learned from the warm-up's draws.
"""

import math
from typing import NamedTuple

import torch

TARGET_ACCEPT_PROB = 0.574  # optimal for MALA (Roberts & Rosenthal 1998)


class DualAveraging(NamedTuple):
    """Per-chain adaptation state (tensors of one shape ``[*chains]``).

    - ``log_step``: the current ``log step_size`` (used during warm-up)
    - ``log_step_avg``: its weighted average (the step size kept after warm-up)
    - ``error_avg``: the running mean of ``target - accept_prob``
    - ``mu``: the point the iterates shrink towards (``log(10 * initial step size)``)
    - ``count``: updates so far (a Python int, the same for every chain)
    """

    log_step: torch.Tensor
    log_step_avg: torch.Tensor
    error_avg: torch.Tensor
    mu: torch.Tensor
    count: int

    @property
    def step_size(self):
        return self.log_step.exp()


def dual_averaging_init(step_size):
    """Start adapting from ``step_size`` (a positive tensor ``[*chains]``)."""
    log_step = step_size.log()
    return DualAveraging(log_step, log_step.clone(), torch.zeros_like(log_step),
                         log_step + math.log(10.0), 0)


def dual_averaging_update(state, accept_prob, target=TARGET_ACCEPT_PROB, *, gamma=0.05, t0=10.0,
                          kappa=0.75):
    """One update from this transition's ``accept_prob`` (``[*chains]``; NaN counts as 0)."""
    t = state.count + 1
    accept_prob = torch.nan_to_num(accept_prob, nan=0.0).to(state.log_step.dtype)
    eta = 1.0 / (t + t0)
    error_avg = (1.0 - eta) * state.error_avg + eta * (target - accept_prob)
    log_step = state.mu - (math.sqrt(t) / gamma) * error_avg
    weight = t ** (-kappa)
    log_step_avg = weight * log_step + (1.0 - weight) * state.log_step_avg
    return DualAveraging(log_step, log_step_avg, error_avg, state.mu, t)


def dual_averaging_final(state):
    """The step sizes to keep after warm-up (the averaged iterate)."""
    return state.log_step_avg.exp() if state.count else state.log_step.exp()


class PairPick:
    """The pair move's pick learned in warm-up. Two coordinates that explain each other away
    (near-duplicate dictionary columns: the image fixes their sum, not how it is shared) are
    negatively correlated under the posterior, along a ridge that Langevin steps sized for
    its narrow side walk slowly; a transfer of mass between them (``z_j += t, z_k -= t``)
    walks it in one move.

    :meth:`record` accumulates, per element of the chain plate, the first two moments of
    the chains' scale-mixture coordinates; :meth:`pick` returns the pairs' cumulative
    probabilities — half uniform over a site's ordered pairs (every pair stays reachable),
    half in proportion to ``max(0, -corr(z_j, z_k))`` (uniform too while no pair is
    negatively correlated) — and the transfer's scale per pair, ``1.19 sd(z_j - z_k)``
    (the optimal random-walk step for ``z_j - z_k`` in one dimension, 2.38 of its sd, split
    between the two). Fixed after warm-up, neither depends on the state, so the transfer is
    a symmetric proposal and the move exact (:func:`~pyro_sparsegen.infer.core.draw_randoms`).

    :param pair_sites: the target's ``(index, start, size)`` (``[P]`` each).
    :param int num_chains: elements of the chain plate (``N``).
    """

    def __init__(self, pair_sites, num_chains, dtype, device):
        index, start, _ = pair_sites
        p = index.numel()
        self.index = index
        eye = torch.eye(p, dtype=torch.bool, device=device)
        self.same = (start.unsqueeze(0) == start.unsqueeze(1)) & ~eye  # [P, P]
        self.sum = torch.zeros((num_chains, p), dtype=dtype, device=device)
        self.outer = torch.zeros((num_chains, p, p), dtype=dtype, device=device)
        self.count = 0

    def record(self, position):
        """Add the states ``position`` ``[C, N, D]`` of ``C`` chains."""
        z = position[..., self.index].to(self.sum.dtype)
        self.sum.add_(z.sum(0))
        self.outer.add_(torch.einsum("cnp,cnq->npq", z, z))
        self.count += z.shape[0]

    def pick(self):
        """``(cdf, scale)``, each ``[N, P * P]`` (row-major ordered pairs), or ``None`` before
        any record or when no site has two coordinates."""
        if not self.count or not bool(self.same.any()):
            return None
        mean = self.sum / self.count
        cov = self.outer / self.count - mean.unsqueeze(-1) * mean.unsqueeze(-2)
        var = cov.diagonal(dim1=-2, dim2=-1).clamp(min=0)
        sd = var.sqrt()
        corr = cov / (sd.unsqueeze(-1) * sd.unsqueeze(-2)).clamp(min=1e-30)
        same = self.same.to(cov.dtype)
        learned = (-corr).clamp(min=0).nan_to_num(0.0) * same
        total = learned.sum((-2, -1), keepdim=True)
        uniform = same / same.sum()
        learned = torch.where(total > 0, learned / total.clamp(min=1e-30), uniform)
        cdf = (0.5 * uniform + 0.5 * learned).flatten(-2).cumsum(-1)
        spread = (var.unsqueeze(-1) + var.unsqueeze(-2) - 2 * cov).clamp(min=0).sqrt()
        scale = (1.19 * spread).nan_to_num(0.0).flatten(-2)
        return cdf / cdf[:, -1:], scale
