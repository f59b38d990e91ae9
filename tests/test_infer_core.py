"""The functional core (pyro_sparsegen.infer.core) on plain tensors: stationary laws, exactness,
per-chain decisions, divergences, the crossing move, adaptation."""

import math

import pytest
import torch

from pyro_sparsegen import SpikeAndSlab
from pyro_sparsegen.infer import adaptation
from pyro_sparsegen.infer.core import (Options, density_from_log_prob, langevin_init,
                                       langevin_step)


def _normal(scale):
    return density_from_log_prob(lambda z: (-0.5 * (z / scale) ** 2).sum(-1))


def _run(density, position, step_size, options, steps, mixture_index=None, keep_from=0):
    state = langevin_init(position, density)
    kept, infos = [], []
    for i in range(steps):
        state, info = langevin_step(state, density, step_size, options=options,
                                    mixture_index=mixture_index)
        if i >= keep_from:
            kept.append(state.position)
            infos.append(info)
    return state, torch.stack(kept), infos


def test_ula_has_its_stated_bias(float64):
    # On N(0, s^2) the unadjusted step z' = (1 - h/s^2) z + delta eps has stationary variance
    # s^2 / (1 - delta^2 / (4 s^2)): 1.64 s^2 on a 0.04 spike at delta 0.05.
    s, delta = 0.04, 0.05
    _, kept, _ = _run(_normal(s), torch.zeros(4000, 1), delta, Options(noise=True), 300,
                      keep_from=100)
    ratio = kept.pow(2).mean().item() / s**2
    assert ratio == pytest.approx(1 / (1 - delta**2 / (4 * s**2)), rel=0.05)
    assert ratio > 1.5  # far from the target's variance: ULA is not exact


def test_mala_is_exact_where_ula_is_not(float64):
    s, delta = 0.04, 0.05
    _, kept, infos = _run(_normal(s), torch.zeros(4000, 1), delta,
                          Options(noise=True, metropolis=True), 300, keep_from=100)
    assert kept.pow(2).mean().item() / s**2 == pytest.approx(1.0, rel=0.05)
    accept = torch.stack([i.accept_prob for i in infos]).mean()
    assert 0.2 < accept < 0.95


def _spike_slab_density(prior):
    return density_from_log_prob(lambda z: prior.log_prob(z).sum(-1),
                                 lambda z: prior.secant_curvature(z))


def test_semi_implicit_mala_is_exact_on_a_varying_preconditioner(float64):
    # The preconditioner P = 1 / (1 + h kappa(z)) changes between spike and slab, so the
    # proposal's normaliser (log P) does not cancel; dropping it gives ~0.24 instead of 0.40.
    prior = SpikeAndSlab(torch.tensor(0.7), torch.tensor(1.0), torch.tensor(0.1))
    start = prior.sample((4000, 1))  # from prior draws: from zeros it never leaves the spike
    _, kept, _ = _run(_spike_slab_density(prior), start, 0.3,
                      Options(noise=True, metropolis=True, precondition=True), 400,
                      keep_from=100)
    exact = 0.7 * math.erf(0.2 / math.sqrt(2)) + 0.3 * math.erf(0.2 / 0.1 / math.sqrt(2))
    inside = (kept.abs() <= 0.2).double().mean().item()
    assert inside == pytest.approx(exact, abs=0.02)


def test_crossing_move_reaches_the_spike_mass_from_dispersed_starts(float64):
    # Posterior = prior (no likelihood), w 0.5, spike 0.04: the exact mass within |z| <= 0.2
    # is 0.579. Explicit MALA from N(0, 3^2) starts stays in the slab for thousands of draws;
    # the crossing move gets there.
    prior = SpikeAndSlab(torch.tensor(0.5), torch.tensor(1.0), torch.tensor(0.04))

    def log_prob(z):
        return prior.log_prob(z).sum(-1)

    class WithRatio:
        def __call__(self, position, glob):
            d = density_from_log_prob(log_prob)(position, glob)
            ratio = torch.full_like(position, math.log(1.0 / 0.04))
            return d._replace(log_scale_ratio=ratio)

    density = WithRatio()
    start = 3.0 * torch.randn(200, 10)
    exact = 0.5 * math.erf(0.2 / math.sqrt(2)) + 0.5 * math.erf(0.2 / 0.04 / math.sqrt(2))
    index = torch.arange(10)
    _, kept, infos = _run(density, start, 0.05,
                          Options(noise=True, metropolis=True, crossing=True), 2000,
                          mixture_index=index, keep_from=1000)
    inside = (kept.abs() <= 0.2).double().mean().item()
    assert inside == pytest.approx(exact, abs=0.05)
    assert torch.stack([i.crossing_accepted for i in infos]).any()
    _, plain, _ = _run(density, start, 0.05, Options(noise=True, metropolis=True), 2000,
                       keep_from=1000)
    assert (plain.abs() <= 0.2).double().mean().item() < exact - 0.1  # without it: stuck


def test_each_chain_accepts_on_its_own(float64):
    # Chain 0 is at the mode (a big step there is rejected), chain 1 far out; their decisions
    # must not be shared.
    density = _normal(1.0)
    state = langevin_init(torch.tensor([[0.0], [50.0]]), density)
    accepted = []
    for _ in range(200):
        state, info = langevin_step(state, density, 1.5, options=Options(metropolis=True))
        accepted.append(info.accepted)
    accepted = torch.stack(accepted).double()
    assert accepted[:, 0].mean() < 0.9 and not torch.equal(accepted[:, 0], accepted[:, 1])


def test_a_diverging_chain_keeps_its_state(float64):
    # An explicit step with h / s^2 > 2 explodes; that chain keeps its last good state while
    # the stable chain moves on.
    def log_prob(z):
        scale = torch.tensor([0.01, 1.0]).reshape(2, 1)
        return (-0.5 * (z / scale) ** 2).sum(-1)

    density = density_from_log_prob(log_prob)
    state = langevin_init(torch.tensor([[0.5], [0.5]]), density)
    diverged = torch.zeros(2, dtype=torch.bool)
    for _ in range(5):
        state, info = langevin_step(state, density, 0.05, options=Options(noise=False))
        diverged |= info.diverging
    assert diverged.tolist() == [True, False]
    assert state.position[0].item() == 0.5  # the diverging chain never moved
    assert abs(state.position[1].item()) < 0.5
    assert torch.isfinite(state.density.local).all()


def test_dual_averaging_reaches_the_target_acceptance(float64):
    density = _normal(torch.tensor([0.1, 1.0, 10.0]).reshape(3, 1))
    state = langevin_init(torch.zeros(3, 4), density)
    da = adaptation.dual_averaging_init(torch.full((3,), 1.0))
    options = Options(metropolis=True)
    for _ in range(600):
        state, info = langevin_step(state, density, da.step_size, options=options)
        da = adaptation.dual_averaging_update(da, info.accept_prob, 0.574)
    step = adaptation.dual_averaging_final(da)
    accept = []
    for _ in range(2000):
        state, info = langevin_step(state, density, step, options=options)
        accept.append(info.accept_prob)
    accept = torch.stack(accept).mean(0)
    assert torch.allclose(accept, torch.full((3,), 0.574), atol=0.08), accept
    assert step[0] < step[1] < step[2]  # each chain found its own scale


def _hierarchical_density(position, glob):
    """log p = -g^2 / 2 + sum_n -(z_n - g)^2 / 2 (chains z_n [R, N, D], global g [R, 1])."""
    with torch.enable_grad():
        z = position.detach().requires_grad_(True)
        g = glob.detach().requires_grad_(True)
        local = (-0.5 * (z - g.unsqueeze(-2)) ** 2).sum(-1)
        shared = (-0.5 * g**2).sum(-1)
        grad, grad_global = torch.autograd.grad(local.sum() + shared.sum(), [z, g])
    from pyro_sparsegen.infer.core import Density

    local = local.detach()
    return Density(local, shared.detach(), torch.zeros_like(local), grad, grad_global)


def test_every_transition_leaves_the_density_of_the_state_it_returns(float64):
    # Chains accept one by one, so the global gradient (a sum over chains) of the evaluated
    # proposal is not the gradient at the position kept; the global MALA step needs the latter.
    state = langevin_init(torch.randn(1, 6, 2), _hierarchical_density, torch.zeros(1, 1))
    for _ in range(50):
        state, info = langevin_step(state, _hierarchical_density, 1.2,
                                    options=Options(metropolis=True), global_step_size=0.4)
        fresh = _hierarchical_density(state.position, state.global_position)
        for name in ("local", "shared", "grad", "grad_global"):
            assert torch.allclose(getattr(state.density, name), getattr(fresh, name)), name
    assert 0.0 < info.accept_prob.mean() < 1.0
