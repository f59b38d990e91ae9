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
