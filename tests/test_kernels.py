"""Tests for pyro_sparsegen.kernels: the batched Langevin core and the Pyro MCMC kernel."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.infer.mcmc.api as mcmc_api
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC

from pyro_sparsegen import (ConvGenerator, MLPGenerator, ShortRunLangevin, SparseGenerator,
                            langevin_init, langevin_step, schedules)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"\s*ArviZ is undergoing a major refactor", FutureWarning)
    import arviz as az

D, SHAPE = 3, (1, 4, 4)
SEQUENTIAL = "Chains will be drawn sequentially"


@pytest.fixture
def sequential_chains(monkeypatch):
    """Pyro runs chains in parallel processes when it has the cores; pin the 2-core CI case
    (one chain after another, in this process) so the tests behave the same everywhere."""
    monkeypatch.setattr(mcmc_api.mp, "cpu_count", lambda: 2)


def _sparse_model(schedule=None, network=None):
    torch.manual_seed(0)
    network = network or MLPGenerator(D, SHAPE, hidden=(8,))
    return SparseGenerator(network, schedule=schedule or schedules.constant(0.3, 1.0, 0.1))


def _images(n=4, shape=SHAPE):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(1))


def _gaussian(sigma):
    """log N(z; 0, sigma^2) per chain, for position [..., chains, dim], as (prior, likelihood)."""
    def log_density(z):
        log_p = (-0.5 * (z / sigma) ** 2).sum(-1)
        return log_p, torch.zeros_like(log_p)
    return log_density


def _run(state, log_density, step_size, steps, **kwargs):
    for _ in range(steps):
        state, info = langevin_step(state, log_density, step_size, **kwargs)
    return state, info


# ---- the functional core ---------------------------------------------------------------------


def test_one_step_is_the_langevin_update(float64):
    pyro.set_rng_seed(0)
    log_density = _gaussian(2.0)
    z = torch.randn(5, 2)
    state = langevin_init(z, log_density, 0.3)
    torch.testing.assert_close(state.grad, -z / 4.0)
    torch.testing.assert_close(state.log_prior, (-0.5 * (z / 2.0) ** 2).sum(-1))
    assert state.precond is None
    torch.manual_seed(3)
    new, info = langevin_step(state, log_density, 0.3)
    torch.manual_seed(3)
    eps = torch.randn_like(z)
    torch.testing.assert_close(new.position, z + 0.5 * 0.3**2 * (-z / 4.0) + 0.3 * eps)
    assert info.accepted.all() and not info.diverging.any()
    assert torch.equal(info.accept_prob, torch.ones(5))
    # without noise it is gradient ascent
    new, _ = langevin_step(state, log_density, 0.3, noise=False)
    torch.testing.assert_close(new.position, z + 0.5 * 0.3**2 * (-z / 4.0))


def test_unadjusted_langevin_stationary_variance(float64, device):
    # z' = (1 - h / s^2) z + delta eps has stationary variance s^2 / (1 - delta^2 / (4 s^2))
    pyro.set_rng_seed(0)
    sigma, delta, n = 1.0, 1.0, 20_000
    state = langevin_init(torch.zeros(n, 1, device=device), _gaussian(sigma), delta)
    state, _ = _run(state, _gaussian(sigma), delta, 60)  # contraction 0.5 per step
    z = state.position.squeeze(-1)
    expected = sigma**2 / (1 - delta**2 / (4 * sigma**2))  # 4/3, not sigma^2 = 1
    se = expected * math.sqrt(2 / n)
    assert abs(z.pow(2).mean().item() - expected) < 5 * se
    assert abs(z.mean().item()) < 5 * math.sqrt(expected / n)
    assert abs(z.pow(2).mean().item() - sigma**2) > 20 * se  # the bias is real


def test_mala_recovers_the_target_variance(float64, device):
    pyro.set_rng_seed(0)
    sigma, delta, n = 1.0, 1.0, 20_000
    state = langevin_init(torch.zeros(n, 1, device=device), _gaussian(sigma), delta)
    state, info = _run(state, _gaussian(sigma), delta, 100, metropolis=True)
    z = state.position.squeeze(-1)
    se = sigma**2 * math.sqrt(2 / n)
    assert abs(z.pow(2).mean().item() - sigma**2) < 5 * se
    assert abs(z.mean().item()) < 5 * math.sqrt(sigma**2 / n)
    assert 0.5 < info.accept_prob.mean().item() < 1.0


def test_mala_requires_noise():
    with pytest.raises(ValueError, match="noise"):
        langevin_step(langevin_init(torch.zeros(2, 1), _gaussian(1.0), 0.1), _gaussian(1.0),
                      0.1, noise=False, metropolis=True)


def test_mala_accepts_per_chain(float64):
    # half the chains see a target far narrower than the step: only those get rejected
    pyro.set_rng_seed(0)
    n = 400
    sigma = torch.where(torch.arange(n) < n // 2, 1.0, 0.02).unsqueeze(-1)
    log_density = _gaussian(sigma)
    z = torch.randn(n, 1) * sigma
    state = langevin_init(z, log_density, 0.5)
    new, info = langevin_step(state, log_density, 0.5, metropolis=True)
    assert info.accept_prob.shape == info.accepted.shape == (n,)
    wide, narrow = info.accept_prob[:n // 2], info.accept_prob[n // 2:]
    assert wide.mean() > 0.8 and narrow.mean() < 0.05
    inside = wide[(wide > 0) & (wide < 1)]
    assert len(inside.unique()) > 20  # one probability per chain, not one per batch
    assert 0 < info.accepted.sum() < n
    moved = (new.position != z).squeeze(-1)
    assert torch.equal(moved, info.accepted)
    torch.testing.assert_close(new.log_prior[~info.accepted], state.log_prior[~info.accepted])


def test_replica_dimensions_are_independent_chains(float64):
    pyro.set_rng_seed(0)
    state = langevin_init(torch.zeros(3, 5, 2), _gaussian(1.0), 0.5)
    state, info = _run(state, _gaussian(1.0), 0.5, 3, metropolis=True)
    assert state.position.shape == (3, 5, 2)
    assert info.accept_prob.shape == state.log_prior.shape == (3, 5)
    assert len(state.position.reshape(-1).unique()) == 30


class _NanGradient(torch.autograd.Function):
    """Identity whose gradient is nan where the value exceeds 1: a finite log density with a
    non-finite gradient."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clone()

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return torch.where(z > 1, torch.full_like(grad, math.nan), grad)


@pytest.mark.parametrize("metropolis", [False, True])
@pytest.mark.parametrize("failure", ["nan_density", "inf_density", "nan_gradient"])
def test_divergent_chains_keep_their_last_finite_state(float64, failure, metropolis):
    # target N(5, 1), but non-finite beyond z = 1: chain 0 starts next to the wall
    def log_density(z):
        if failure == "nan_gradient":
            z = _NanGradient.apply(z)
        log_p = (-0.5 * (z - 5.0) ** 2).sum(-1)
        if failure != "nan_gradient":
            bad = math.nan if failure == "nan_density" else math.inf
            log_p = torch.where((z > 1).any(-1), torch.full_like(log_p, bad), log_p)
        return log_p, torch.zeros_like(log_p)

    pyro.set_rng_seed(0)
    z = torch.tensor([[0.99], [-10.0]])
    state = langevin_init(z, log_density, 0.5)
    new, info = langevin_step(state, log_density, 0.5, noise=metropolis, metropolis=metropolis)
    assert info.diverging.tolist() == [True, False]
    assert info.accept_prob[0].item() == 0.0 and not info.accepted[0]
    assert new.position[0].item() == 0.99  # kept
    assert new.position[1].item() != -10.0  # moved
    assert torch.isfinite(new.log_prior).all() and torch.isfinite(new.grad).all()
    assert new.log_prior[0] == state.log_prior[0]


def test_divergences_are_counted_by_the_kernel(float64):
    # a user model whose density is -inf beyond |z| = 1 (a factor), pulled outwards by the data
    def model(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.1), obs=x)
            pyro.factor("wall", torch.where(z.abs() < 1, 0.0, -math.inf))

    pyro.set_rng_seed(0)
    x = torch.tensor([0.0, 5.0])
    kernel = ShortRunLangevin(model, step_size=0.05, num_steps=20, noise=False)
    z = kernel.infer(x)["z"]
    divergences = kernel.last_run.divergences
    assert divergences[0] == 0 and divergences[1] > 0
    assert z[1].abs() < 1 and z[1] > 0.5  # stuck at its last finite state, below the wall
    assert torch.isfinite(kernel.last_run.log_likelihood).all()


def test_semi_implicit_prior_step_is_stable_for_a_tiny_spike(float64):
    # explicit: z' = z (1 - h / s^2 - h) + h x grows 1249x per step: the first step whose log
    # density falls by more than 1000 nats is a divergence, and the chain keeps its last state
    def model(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1e-3))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.tensor([-0.7, 0.3, 1.5])
    explicit = ShortRunLangevin(model, step_size=0.05, num_steps=60, noise=False)
    z = explicit.infer(x)["z"]
    assert (explicit.last_run.divergences > 0).all()
    assert torch.isfinite(z).all() and z.abs().max() < 1e3  # stopped before it exploded
    semi = ShortRunLangevin(model, step_size=0.05, num_steps=60, noise=False,
                            prior_step="semi-implicit")
    z = semi.infer(x)["z"]
    assert (semi.last_run.divergences == 0).all()
    mode = x * 1e-6 / (1 + 1e-6)  # the posterior mode
    torch.testing.assert_close(z, mode, rtol=1e-3, atol=0.0)


def test_semi_implicit_on_the_spike_and_slab_model(float64):
    model = _sparse_model(schedules.constant(0.1, 1.0, 1e-3))
    x = _images()
    out = {}
    for prior_step in ("explicit", "semi-implicit"):
        kernel = ShortRunLangevin(model, step_size=0.05, num_steps=30, noise=False,
                                  prior_step=prior_step)
        z = kernel.infer(x)["z"]
        out[prior_step] = z, (kernel.last_run.log_prior + kernel.last_run.log_likelihood).sum()
    z_semi, joint_semi = out["semi-implicit"]
    z_explicit, joint_explicit = out["explicit"]
    # the explicit step flings spike coordinates out (|z| ~ 1249 x their size); the
    # semi-implicit one keeps them in the spike and reaches a far higher log posterior
    assert z_semi.abs().max() < 1e-3
    assert z_explicit.abs().max() > 0.5
    assert joint_semi > joint_explicit + 100


def test_semi_implicit_mala_is_exact(float64):
    # with the preconditioner in the proposal density, MALA still targets the posterior
    def model(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 0.5))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    pyro.set_rng_seed(0)
    n = 4000
    x = torch.full((n,), 1.0)
    kernel = ShortRunLangevin(model, step_size=0.8, num_steps=30, metropolis=True,
                              prior_step="semi-implicit")
    z = kernel.infer(x)["z"]
    var = 1 / (1 / 0.25 + 1)  # conjugate posterior: N(x var, var)
    assert abs(z.mean().item() - var) < 5 * math.sqrt(var / n)
    assert abs(z.var().item() - var) < 5 * var * math.sqrt(2 / n)


# ---- a conjugate model, through the generic (trace) path -------------------------------------

N_LG, D_LG, P_LG, S_LG = 3, 2, 4, 0.5


def _linear_gaussian():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(P_LG, D_LG, generator=g, dtype=torch.float64)
    b = 0.1 * torch.randn(P_LG, generator=g, dtype=torch.float64)
    x = torch.randn(N_LG, P_LG, generator=g, dtype=torch.float64)

    def model(x):  # a plain user model: no fast path
        with pyro.plate("images", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([D_LG]).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, S_LG).to_event(1), obs=x)

    cov = torch.linalg.inv(torch.eye(D_LG) + W.T @ W / S_LG**2)
    mean = (x - b) @ W @ cov / S_LG**2
    return model, x, mean, cov


def test_posterior_of_a_conjugate_linear_gaussian_model(float64):
    pyro.set_rng_seed(0)
    model, x, mean, cov = _linear_gaussian()
    assert not hasattr(model, "log_joint_terms")
    step = 0.6 * cov.diagonal().sqrt().min().item()
    kernel = ShortRunLangevin(model, step_size=step, metropolis=True, init="normal")
    chains = 300
    samples, stats = kernel.sample_chains(x, num_chains=chains, num_draws=20, warmup_steps=40,
                                          thin=3)
    z = samples["z"]  # [chains, draws, images, latent]
    assert z.shape == (chains, 20, N_LG, D_LG)
    assert stats["accept_prob"].mean() > 0.6
    # replica chains are independent: standard errors from the spread of per-chain estimates
    chain_means = z.mean(1)
    se = chain_means.std(0) / math.sqrt(chains)
    assert ((chain_means.mean(0) - mean).abs() < 5 * se).all()
    dev = z - mean
    chain_covs = torch.einsum("ctni,ctnj->cnij", dev, dev) / z.shape[1]
    se = chain_covs.std(0) / math.sqrt(chains)
    assert ((chain_covs.mean(0) - cov).abs() < 5 * se).all()
    # and the estimate is sharp enough to tell the posterior from the prior
    assert ((chain_covs.mean(0).diagonal(dim1=-2, dim2=-1) - 1.0).abs() > 20 * se.diagonal(
        dim1=-2, dim2=-1)).all()


def test_generic_path_log_density_equals_the_trace(float64):
    model, x, _, _ = _linear_gaussian()
    kernel = ShortRunLangevin(model)
    z = torch.randn(N_LG, D_LG, requires_grad=True)
    log_prior, log_lik = kernel.log_density({"z": z}, x)
    trace = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x)
    trace.compute_log_prob()
    torch.testing.assert_close(log_prior, trace.nodes["z"]["log_prob"])
    torch.testing.assert_close(log_lik, trace.nodes["x"]["log_prob"])


# ---- the fast path ---------------------------------------------------------------------------


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_fast_path_log_density_and_gradient_equal_the_trace(float64, device, network):
    torch.manual_seed(0)
    if network == "mlp":
        net, shape = MLPGenerator(D, SHAPE, hidden=(8,)), SHAPE
    else:
        net, shape = ConvGenerator(D, (1, 8, 8), width=4), (1, 8, 8)
    schedule = schedules.authors(warmup_iterations=1, decay_per_iteration=0.2, floor=0.05)
    model = SparseGenerator(net, schedule=schedule).to(device)
    model.iteration = 3
    x = _images(4, shape).to(device)
    kernel = ShortRunLangevin(model)
    z = torch.randn(4, D, device=device) * torch.tensor([1.0, 0.05, 0.2], device=device)

    def reference(z):
        trace = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x)
        return trace.log_prob_sum()

    zr = z.clone().requires_grad_(True)
    expected = reference(zr)
    (expected_grad,) = torch.autograd.grad(expected, zr)

    state = langevin_init(z, lambda p: kernel.log_density({"z": p}, x), 0.05)
    # float64: equal up to summation order (1e-10 leaves room for GPU kernels' choices)
    torch.testing.assert_close((state.log_prior + state.log_likelihood).sum(), expected,
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state.grad, expected_grad, rtol=1e-10, atol=1e-10)
    # and the kernel's own infer() uses that same density: one noiseless step
    one = ShortRunLangevin(model, step_size=0.05, num_steps=1, noise=False).infer(x)["z"]
    assert one.device == x.device
    z0 = torch.zeros(4, D, device=device, requires_grad=True)
    (grad0,) = torch.autograd.grad(reference(z0), z0)
    torch.testing.assert_close(one, 0.5 * 0.05**2 * grad0, rtol=1e-10, atol=1e-14)


def test_schedule_change_changes_the_potential(float64):
    schedule = schedules.authors(warmup_iterations=2, decay_per_iteration=0.1, floor=0.01)
    model, x = _sparse_model(schedule), _images()
    kernel = ShortRunLangevin(model, step_size=0.05, num_steps=5, noise=False)
    z = torch.full((4, D), 0.05)

    def trace_prior():
        trace = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x)
        trace.compute_log_prob()
        return trace.nodes["z"]["log_prob"]

    before, _ = kernel.log_density({"z": z}, x)
    z_before = kernel.infer(x)["z"]
    torch.testing.assert_close(before, trace_prior())
    model.iteration = 12
    after, _ = kernel.log_density({"z": z}, x)
    torch.testing.assert_close(after, trace_prior())
    assert (after > before + 1).all()  # sparser prior: a small code is more likely
    assert not torch.allclose(kernel.infer(x)["z"], z_before)
    # the MCMC adapter sees it too: its first draw is one noiseless step from z
    first_draws = {}
    for iteration in (0, 12):
        model.iteration = iteration
        state = langevin_init(z, lambda p: kernel.log_density({"z": p}, x), 0.05)
        mcmc = MCMC(ShortRunLangevin(model, step_size=0.05, noise=False), num_samples=1,
                    warmup_steps=0, initial_params={"z": z}, disable_progbar=True)
        mcmc.run(x)
        first_draws[iteration] = mcmc.get_samples()["z"][0]
        torch.testing.assert_close(first_draws[iteration], z + 0.5 * 0.05**2 * state.grad)
    assert (first_draws[12] - first_draws[0]).abs().min() > 1e-3


# ---- infer() and sample_chains() -------------------------------------------------------------


def test_infer_shapes_and_replicas(float64, device):
    pyro.set_rng_seed(0)
    model, x = _sparse_model().to(device), _images().to(device)
    kernel = ShortRunLangevin(model, step_size=0.05, num_steps=4)
    out = kernel.infer(x)
    assert set(out) == {"z"} and out["z"].shape == (4, D)
    assert out["z"].device == x.device  # device follows the data
    run = kernel.last_run
    for field in run:
        assert field.shape == (4,)
    assert run.divergences.dtype == torch.long
    torch.testing.assert_close(run.acceptance, torch.ones(4, device=device))
    out = kernel.infer(x, num_chains=5)
    assert out["z"].shape == (5, 4, D)
    assert kernel.last_run.log_prior.shape == (5, 4)
    assert len(out["z"].reshape(-1).unique()) == 5 * 4 * D  # independent noise per replica
    with pytest.raises(ValueError, match="num_chains"):
        kernel.infer(x, num_chains=0)


def test_infer_replicas_through_the_generic_path(float64):
    pyro.set_rng_seed(0)
    model, x, _, _ = _linear_gaussian()
    out = ShortRunLangevin(model, step_size=0.1, num_steps=3).infer(x, num_chains=2)
    assert out["z"].shape == (2, N_LG, D_LG)
    assert not torch.allclose(out["z"][0], out["z"][1])


def test_infer_starts_fresh_every_call(float64):
    model = _sparse_model()
    x1, x2 = _images(4), 1 - _images(4)
    kernel = ShortRunLangevin(model, step_size=0.05, num_steps=5, noise=False)
    kernel.infer(x1)
    again = kernel.infer(x2)["z"]
    fresh = ShortRunLangevin(model, step_size=0.05, num_steps=5, noise=False).infer(x2)["z"]
    assert torch.equal(again, fresh)
    # a batch of another size works too
    assert kernel.infer(_images(2))["z"].shape == (2, D)


@pytest.mark.parametrize("init", ["zeros", "normal", "prior"])
def test_infer_init(float64, init):
    pyro.set_rng_seed(0)
    model = _sparse_model(schedules.constant(0.5, 1.0, 0.01))
    kernel = ShortRunLangevin(model, step_size=1e-8, num_steps=1, noise=False, init=init)
    z = kernel.infer(_images(400))["z"]
    if init == "zeros":
        assert z.abs().max() < 1e-12
    elif init == "normal":
        assert abs(z.std().item() - 1.0) < 0.1
    else:  # spike-and-slab draws: about half of them tiny
        assert abs((z.abs() < 0.05).double().mean().item() - 0.5 * (1 + 0.04)) < 0.06


def test_sample_chains_shapes(float64):
    pyro.set_rng_seed(0)
    model, x = _sparse_model(), _images()
    kernel = ShortRunLangevin(model, step_size=0.05, num_steps=3, metropolis=True)
    samples, stats = kernel.sample_chains(x, num_chains=2, num_draws=5, thin=2)
    assert samples["z"].shape == (2, 5, 4, D)
    assert set(stats) == {"log_prior", "log_likelihood", "accept_prob", "diverging"}
    for value in stats.values():
        assert value.shape == (2, 5, 4)
    assert stats["diverging"].dtype == torch.bool
    assert ((stats["accept_prob"] >= 0) & (stats["accept_prob"] <= 1)).all()
    # the recorded log densities are those of the recorded draws
    lp, ll = kernel.log_density({"z": samples["z"][1, 3]}, x)
    torch.testing.assert_close(lp, stats["log_prior"][1, 3])
    torch.testing.assert_close(ll, stats["log_likelihood"][1, 3])
    with pytest.raises(ValueError, match="num_draws"):
        kernel.sample_chains(x, num_draws=0)


# ---- the MCMC kernel contract ----------------------------------------------------------------


def test_mcmc_sample_shapes(float64):
    pyro.set_rng_seed(0)
    model, x = _sparse_model(), _images()
    mcmc = MCMC(ShortRunLangevin(model, step_size=0.05), num_samples=7, warmup_steps=3,
                disable_progbar=True)
    mcmc.run(x)
    assert mcmc.get_samples()["z"].shape == (7, 4, D)
    assert mcmc.get_samples(group_by_chain=True)["z"].shape == (1, 7, 4, D)
    diagnostics = mcmc.diagnostics()
    assert "divergences" in diagnostics


def test_mcmc_sequential_chains_share_no_state(float64, sequential_chains):
    # nearly frozen chains (tiny noiseless steps) from random starts: if chain 1 started where
    # chain 0 stopped, their draws would coincide
    pyro.set_rng_seed(0)
    model, x = _sparse_model(), _images()
    kernel = ShortRunLangevin(model, step_size=1e-6, init="normal", noise=False)
    with pytest.warns(UserWarning, match=SEQUENTIAL):
        mcmc = MCMC(kernel, num_samples=4, warmup_steps=2, num_chains=2, disable_progbar=True)
    mcmc.run(x)
    z = mcmc.get_samples(group_by_chain=True)["z"]
    assert z.shape == (2, 4, 4, D)
    assert (z[1, 0] - z[0, -1]).abs().max() > 0.1
    assert (z[0, -1] - z[0, 0]).abs().max() < 1e-4
    assert kernel.initial_params is None  # cleanup() reset them


def test_mcmc_sequential_chains_diagnostics_are_per_chain(float64, sequential_chains):
    # chain-level statistics restart with each chain
    pyro.set_rng_seed(0)
    model, x = _sparse_model(), _images()
    with pytest.warns(UserWarning, match=SEQUENTIAL):
        mcmc = MCMC(ShortRunLangevin(model, step_size=0.05, metropolis=True), num_samples=5,
                    warmup_steps=2, num_chains=2, disable_progbar=True)
    mcmc.run(x)
    for chain in mcmc._diagnostics:
        assert all(0 <= i < 5 for i in chain["divergences"])
        assert 0 <= chain["acceptance rate"] <= 1


def test_mcmc_initial_params_are_honoured(float64):
    model, x = _sparse_model(), _images()
    start = {"z": torch.linspace(-1, 1, 4 * D).reshape(4, D)}
    kernel = ShortRunLangevin(model, step_size=1e-6, noise=False)
    mcmc = MCMC(kernel, num_samples=2, warmup_steps=0, initial_params=start,
                disable_progbar=True)
    mcmc.run(x)
    z = mcmc.get_samples()["z"]
    torch.testing.assert_close(z[0], start["z"], rtol=0, atol=1e-9)
    # one exact Langevin step from the given start
    state = langevin_init(start["z"], lambda p: kernel.log_density({"z": p}, x), 1e-6)
    torch.testing.assert_close(z[0], start["z"] + 0.5e-12 * state.grad, rtol=1e-12, atol=0)


def test_potential_fn_kernel(float64):
    pyro.set_rng_seed(0)

    def potential_fn(params):
        return 0.5 * (params["a"] ** 2).sum() + 0.5 * ((params["b"] - 1) ** 2).sum()

    kernel = ShortRunLangevin(potential_fn=potential_fn, step_size=0.5, metropolis=True)
    mcmc = MCMC(kernel, num_samples=300, warmup_steps=20,
                initial_params={"a": torch.zeros(2), "b": torch.zeros(())},
                disable_progbar=True)
    mcmc.run()
    samples = mcmc.get_samples()
    assert samples["a"].shape == (300, 2) and samples["b"].shape == (300,)
    assert abs(samples["b"].mean().item() - 1.0) < 0.4  # N(1, 1), ~100 effective draws


# ---- ArviZ -----------------------------------------------------------------------------------


def _assert_groups(idata, site, plate_size, obs):
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        assert hasattr(idata, group), group
    assert idata.posterior[site].dims[:2] == ("chain", "draw")
    assert idata.log_likelihood[obs].shape[:3] == (idata.posterior.sizes["chain"],
                                                   idata.posterior.sizes["draw"], plate_size)
    assert "diverging" in idata.sample_stats
    assert np.isfinite(idata.log_likelihood[obs].values).all()


@pytest.mark.filterwarnings(f"ignore:.*{SEQUENTIAL}:UserWarning")
def test_arviz_from_pyro_for_the_package_model(float64, sequential_chains, tmp_path):
    pyro.set_rng_seed(0)
    model, x = _sparse_model(), _images()
    mcmc = MCMC(ShortRunLangevin(model, step_size=0.05), num_samples=6, warmup_steps=2,
                num_chains=2, disable_progbar=True)
    mcmc.run(x)
    idata = az.from_pyro(mcmc)
    _assert_groups(idata, "z", 4, "x")
    assert idata.posterior["z"].shape == (2, 6, 4, D)
    # the log-likelihood is the model's, at each draw
    z = mcmc.get_samples(group_by_chain=True)["z"]
    expected = model.likelihood(z[1, 4]).log_prob(x).detach()
    np.testing.assert_allclose(idata.log_likelihood["x"].values[1, 4], expected.numpy(),
                               rtol=1e-10)
    np.testing.assert_array_equal(idata.observed_data["x"].values, x.numpy())

    # NetCDF round trip
    path = tmp_path / "posterior.nc"
    idata.to_netcdf(str(path))
    again = az.from_netcdf(str(path))
    assert set(again.groups()) == set(idata.groups())
    for group in idata.groups():
        for name, value in getattr(idata, group).data_vars.items():
            np.testing.assert_array_equal(getattr(again, group)[name].values, value.values)


def test_arviz_from_pyro_for_a_user_model(float64):
    # a different prior (Laplace) and likelihood (Student-t), two latent sites
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 2, generator=g, dtype=torch.float64)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)

    def model(x):
        offset = pyro.sample("offset", dist.Normal(0.0, 1.0))
        with pyro.plate("rows", x.shape[0]):
            z = pyro.sample("z", dist.Laplace(0.0, 0.5).expand([2]).to_event(1))
            # unsqueeze: vectorisable (az.from_pyro evaluates all draws at once)
            loc = z @ W.T + offset.unsqueeze(-1)
            pyro.sample("x", dist.StudentT(4.0, loc, 0.5).to_event(1), obs=x)

    pyro.set_rng_seed(0)
    kernel = ShortRunLangevin(model, step_size=0.05)
    mcmc = MCMC(kernel, num_samples=5, warmup_steps=2, disable_progbar=True)
    mcmc.run(x)
    samples = mcmc.get_samples()
    assert samples["z"].shape == (5, 6, 2) and samples["offset"].shape == (5,)
    idata = az.from_pyro(mcmc)
    _assert_groups(idata, "z", 6, "x")
    assert idata.posterior["offset"].shape == (1, 5)
    expected = dist.StudentT(4.0, samples["z"][3] @ W.T + samples["offset"][3], 0.5).log_prob(
        x).sum(-1)
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0, 3], expected.numpy(),
                               rtol=1e-10)


# ---- constructor validation ------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(), "exactly one"),
    (dict(model=lambda: None, potential_fn=lambda p: 0.0), "exactly one"),
    (dict(model=lambda: None, step_size=0.0), "step_size"),
    (dict(model=lambda: None, step_size=math.nan), "step_size"),
    (dict(model=lambda: None, num_steps=0), "num_steps"),
    (dict(model=lambda: None, init="uniform"), "init"),
    (dict(model=lambda: None, prior_step="implicit"), "prior_step"),
    (dict(model=lambda: None, metropolis=True, noise=False), "noise"),
    (dict(potential_fn=lambda p: 0.0, prior_step="semi-implicit"), "semi-implicit"),
])
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShortRunLangevin(**kwargs)


def test_discrete_latent_sites_are_rejected():
    def model():
        pyro.sample("k", dist.Poisson(3.0))

    with pytest.raises(ValueError, match="real-valued"):
        ShortRunLangevin(model).infer()
