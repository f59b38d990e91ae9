"""ShortRunLangevin as Pyro users expect of a kernel: textbook posteriors through MCMC with
adaptation (closed forms, NUTS), the MCMCKernel contract, infer, refused settings."""

import math

import arviz as az
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.stats import effective_sample_size

import pyro_sparsegen as psg
from pyro_sparsegen.infer import ShortRunLangevin


def run_mcmc(model, *args, num_samples=1500, warmup_steps=500, step_size=0.1, **options):
    kernel = ShortRunLangevin(model, metropolis=True, step_size=step_size, **options)
    mcmc = pyro.infer.MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps,
                           disable_progbar=True)
    mcmc.run(*args)
    return mcmc, kernel


def assert_moments(draws, mean, sd, name=""):
    """Posterior mean and sd within 4 Monte Carlo standard errors (from the effective sample
    size of the draws, ``[draws, ...]``)."""
    draws = draws.double()
    ess = effective_sample_size(draws.unsqueeze(0), chain_dim=0, sample_dim=1).clamp(min=10)
    mean, sd = torch.as_tensor(mean, dtype=draws.dtype), torch.as_tensor(sd, dtype=draws.dtype)
    mcse_mean = sd / ess.sqrt()
    mcse_sd = sd / (2 * ess).sqrt()
    # the figures (pytest -s shows them): the estimate, the closed form, the error in MCSE
    print(f"{name}: mean {draws.mean(0).tolist()} vs {mean.tolist()} (error / MCSE "
          f"{((draws.mean(0) - mean).abs() / mcse_mean).tolist()}); sd {draws.std(0).tolist()}"
          f" vs {sd.tolist()} (error / MCSE {((draws.std(0) - sd).abs() / mcse_sd).tolist()})")
    assert ((draws.mean(0) - mean).abs() <= 4 * mcse_mean).all(), \
        (name, draws.mean(0), mean, mcse_mean)
    assert ((draws.std(0) - sd).abs() <= 4 * mcse_sd).all(), (name, draws.std(0), sd, mcse_sd)


def test_gaussian_chain_of_sites_without_plates(float64):
    # loc_0 ~ N(0, 1), loc_k ~ N(loc_{k-1}, 1), data ~ N(loc_2, 1): shape [3] sites, no plate,
    # data [1, 3] (a batch dim the sites do not have).
    data = torch.tensor([[1.5, -0.5, 3.0]])

    def model(data):
        loc = torch.zeros(3)
        for k in range(3):
            loc = pyro.sample(f"loc_{k}", dist.Normal(loc, 1.0))
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    mcmc, _ = run_mcmc(model, data, step_size=0.5)
    precision = torch.tensor([[2.0, -1, 0], [-1, 2, -1], [0, -1, 2]])
    cov = torch.linalg.inv(precision)
    samples = mcmc.get_samples()
    for k in range(3):
        assert_moments(samples[f"loc_{k}"], cov[k, 2] * data[0], cov[k, k].sqrt().expand(3),
                       f"loc_{k}")


def test_beta_bernoulli_with_few_observations(float64):
    # With 5 observations a missing Jacobian shifts the posterior by far more than 4 MCSE.
    data = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])

    def model(data):
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        with pyro.plate("data", len(data)):
            pyro.sample("y", dist.Bernoulli(p), obs=data)

    mcmc, kernel = run_mcmc(model, data)
    a, b = 2 + data.sum(), 2 + (1 - data).sum()
    assert_moments(mcmc.get_samples()["p"], a / (a + b),
                   (a * b / ((a + b) ** 2 * (a + b + 1))).sqrt(), "p")
    # the warm-up adapted the step size towards the target acceptance
    assert abs(kernel.chain_stats[-1]["acceptance rate"] - 0.574) < 0.1


def test_gamma_normal_with_few_observations(float64):
    y = torch.tensor([0.5, -1.2, 0.3, 2.0, -0.7])

    def model(y):
        tau = pyro.sample("tau", dist.Gamma(3.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(0.0, tau.rsqrt()), obs=y)

    mcmc, _ = run_mcmc(model, y, step_size=0.3)
    a, rate = 3 + len(y) / 2, 1 + (y**2).sum() / 2
    assert_moments(mcmc.get_samples()["tau"], a / rate, math.sqrt(a) / rate, "tau")


def test_dirichlet_categorical(float64):
    y = torch.tensor([0, 2, 2, 1, 2])
    prior = torch.tensor([1.0, 2.0, 3.0])

    def model(y):
        p = pyro.sample("p", dist.Dirichlet(prior))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Categorical(p), obs=y)

    mcmc, _ = run_mcmc(model, y, step_size=0.3)
    alpha = prior + torch.bincount(y, minlength=3)
    total = alpha.sum()
    assert_moments(mcmc.get_samples()["p"], alpha / total,
                   (alpha * (total - alpha) / (total**2 * (total + 1))).sqrt(), "p")


def test_a_potential_fn_target(float64):
    # A correlated 2-D Gaussian given as a potential energy on unconstrained params.
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]])
    precision = torch.linalg.inv(cov)

    def potential(params):
        z = params["z"]
        return 0.5 * z @ precision @ z

    kernel = ShortRunLangevin(potential_fn=potential, metropolis=True, step_size=0.5)
    mcmc = pyro.infer.MCMC(kernel, num_samples=2000, warmup_steps=500, disable_progbar=True,
                           initial_params={"z": torch.zeros(2)})
    mcmc.run()
    assert_moments(mcmc.get_samples()["z"], torch.zeros(2), cov.diag().sqrt(), "z")


def test_logistic_regression_against_nuts(float64):
    pyro.set_rng_seed(1)
    x = torch.randn(30, 2)
    y = torch.bernoulli(torch.sigmoid(x @ torch.tensor([1.0, -1.5])))

    def model(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 2.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)

    nuts = pyro.infer.MCMC(pyro.infer.NUTS(model), num_samples=400, warmup_steps=200,
                           disable_progbar=True)
    nuts.run(x, y)
    reference = nuts.get_samples()["w"]
    mcmc, _ = run_mcmc(model, x, y, num_samples=2000, step_size=0.3)
    draws = mcmc.get_samples()["w"]
    # both are Monte Carlo estimates: 4 standard errors of their difference
    ess = [effective_sample_size(d.unsqueeze(0), chain_dim=0, sample_dim=1) for d in
           (draws, reference)]
    sd = reference.std(0)
    se_mean = (sd**2 / ess[0] + sd**2 / ess[1]).sqrt()
    se_sd = (sd**2 / (2 * ess[0]) + sd**2 / (2 * ess[1])).sqrt()
    assert ((draws.mean(0) - reference.mean(0)).abs() <= 4 * se_mean).all()
    assert ((draws.std(0) - sd).abs() <= 4 * se_sd).all()


def test_hierarchical_spike_and_slab_with_a_beta_weight(float64):
    # w ~ Beta(2, 2) global; z_i ~ SpikeAndSlab(w, 1, 0.1) per image; x_i ~ N(z_i, 0.5^2).
    # p(w | x) and E[z_i | x] are one-dimensional integrals: exact on a grid.
    x = torch.tensor([1.2, 0.05, -0.9])
    sigma = 0.5

    def model(x):
        w = pyro.sample("w", dist.Beta(2.0, 2.0))
        with pyro.plate("images", len(x)):
            z = pyro.sample("z", psg.SpikeAndSlab(w, 1.0, 0.1))
            pyro.sample("x", dist.Normal(z, sigma), obs=x)

    grid = torch.linspace(1e-4, 1 - 1e-4, 20001)
    slab_var, spike_var = 1.0 + sigma**2, 0.01 + sigma**2
    slab = dist.Normal(0.0, math.sqrt(slab_var)).log_prob(x).exp()
    spike = dist.Normal(0.0, math.sqrt(spike_var)).log_prob(x).exp()
    marginal = grid[:, None] * slab + (1 - grid[:, None]) * spike  # [grid, images]
    posterior = dist.Beta(2.0, 2.0).log_prob(grid).exp() * marginal.prod(-1)
    posterior = posterior / posterior.sum()
    w_mean = (posterior * grid).sum()
    w_sd = ((posterior * (grid - w_mean) ** 2).sum()).sqrt()
    r = grid[:, None] * slab / marginal
    z_given_w = x * (r / slab_var + (1 - r) * 0.01 / spike_var)
    z_mean = (posterior[:, None] * z_given_w).sum(0)
    mcmc, kernel = run_mcmc(model, x, num_samples=2000, step_size=0.2)
    target = next(iter(kernel._targets.values()))
    assert (target.plate, target.global_size) == ("images", 1)  # per-image blocks + global
    samples = mcmc.get_samples()
    assert_moments(samples["w"], w_mean, w_sd, "w")
    z = samples["z"]
    ess = effective_sample_size(z.unsqueeze(0), chain_dim=0, sample_dim=1).clamp(min=10)
    assert ((z.mean(0) - z_mean).abs() <= 4 * z.std(0) / ess.sqrt()).all(), (z.mean(0), z_mean)


def test_the_global_step_is_scaled_to_its_curvature(float64):
    # A Beta inclusion rate shared by 100 images x 100 dimensions: logit-space curvature near
    # 2,500, where a fixed delta of 0.05 is unstable. infer's default must be stable.
    pyro.set_rng_seed(0)
    z_true = torch.randn(100, 100) * (torch.rand(100, 100) < 0.3)
    x = z_true + 0.1 * torch.randn(100, 100)

    def model(x):
        w = pyro.sample("w", dist.Beta(2.0, 2.0))
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", psg.SpikeAndSlab(w, 1.0, 0.05).expand([100]).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.1).to_event(1), obs=x)

    kernel = ShortRunLangevin(model, noise=False, num_steps=40, prior_step="semi-implicit")
    values = kernel.infer(x)
    assert kernel.last_run.divergences.sum() == 0
    assert 0.1 < values["w"].item() < 0.5

    def location(x):  # a shared mean: curvature 1 + 10,000 everywhere (h kappa = 12.5)
        m = pyro.sample("m", dist.Normal(0.0, 1.0))
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(m, 1.0).expand([100]).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.1).to_event(1), obs=x)

    kernel = ShortRunLangevin(location, noise=False, num_steps=40)
    values = kernel.infer(x + 1.0)
    assert kernel.last_run.divergences.sum() == 0
    assert values["m"].item() == pytest.approx(values["z"].mean().item() * 1e4 / (1 + 1e4),
                                               abs=0.02)


def test_infer_returns_constrained_values_and_is_map_in_the_unconstrained_space(float64):
    # A Gamma(3, 1) site alone: its mode is 2, but MAP in log space with the Jacobian
    # maximises log Gamma(e^u) + u, whose argmax is e^u = 3.
    def model():
        pyro.sample("tau", dist.Gamma(3.0, 1.0))

    kernel = ShortRunLangevin(model, noise=False, step_size=0.5, num_steps=300)
    tau = kernel.infer()["tau"]
    assert tau.item() == pytest.approx(3.0, rel=1e-4)
    assert ShortRunLangevin(model, step_size=0.5).infer()["tau"] > 0  # noise on: positive


def test_same_seed_same_infer(float64):
    model = psg.SparseGenerator(psg.MLPGenerator(3, (1, 4, 4), hidden=(8,)).double(),
                                schedule=psg.schedules.constant(0.3, 1.0, 0.1))
    x = torch.rand(5, 1, 4, 4)
    kernel = ShortRunLangevin(model, init="prior", num_steps=5)
    pyro.set_rng_seed(7)
    first = kernel.infer(x)["z"]  # builds the target (a trace of the model) and its graph
    pyro.set_rng_seed(7)
    second = kernel.infer(x)["z"]  # reuses them
    assert torch.equal(first, second)


def test_refused_settings_name_the_alternatives():
    model = psg.SparseGenerator(psg.MLPGenerator(3, (1, 4, 4)))
    with pytest.raises(ValueError, match=r"samples a wrong distribution.*noise=False \(MAP\)"
                                         r".*metropolis=True.*prior_step='explicit'"):
        ShortRunLangevin(model, noise=True, prior_step="semi-implicit")
    with pytest.raises(ValueError, match="metropolis=True needs noise=True"):
        ShortRunLangevin(model, noise=False, metropolis=True)
    with pytest.raises(ValueError, match="adapt_step_size=True needs metropolis=True"):
        ShortRunLangevin(model, adapt_step_size=True)
    with pytest.raises(ValueError, match="init must be one of"):
        ShortRunLangevin(model, init="ones")


def sparse_model():
    return psg.SparseGenerator(psg.MLPGenerator(4, (1, 4, 4), hidden=(8,)).double(),
                               schedule=psg.schedules.constant(0.3, 1.0, 0.1))


@pytest.mark.filterwarnings("ignore:num_chains=2 is more than available_cpu")
def test_mcmc_contract_and_arviz(float64, tmp_path):
    model = sparse_model()
    x = torch.rand(3, 1, 4, 4)
    kernel = ShortRunLangevin(model, metropolis=True)
    mcmc = pyro.infer.MCMC(kernel, num_samples=20, warmup_steps=20, num_chains=2,
                           disable_progbar=True, mp_context=None)
    mcmc.run(x)
    z = mcmc.get_samples(group_by_chain=True)["z"]
    assert z.shape == (2, 20, 3, 4)
    assert not torch.equal(z[0, 0], z[1, 0])  # the chains started at their own prior draws
    idata = az.from_pyro(mcmc, **psg.diagnostics.pyro_dims(model, x))
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        assert group in idata.groups(), group
    psg.diagnostics.add_kernel_stats(idata, mcmc)
    assert idata.sample_stats["acceptance_rate"].shape == (2, 20, 3)
    assert idata.sample_stats["step_size"].shape == (2, 20, 3)
    path = tmp_path / "idata.nc"
    idata.to_netcdf(path)
    assert az.from_netcdf(path).sample_stats["step_size"].shape == (2, 20, 3)
    # initial_params honoured (unconstrained values, Pyro's convention)
    start = {"z": torch.full((3, 4), 0.25)}
    first = []

    def hook(kernel, params, stage, i):
        if not first:
            first.append(params["z"].clone())

    mcmc = pyro.infer.MCMC(ShortRunLangevin(model, metropolis=True, step_size=1e-8, crossing=False),
                           num_samples=1, warmup_steps=0, initial_params=start,
                           disable_progbar=True, hook_fn=hook)
    mcmc.run(x)
    assert torch.allclose(first[0], start["z"], atol=1e-6)


def test_log_density_for_any_key_order(float64):
    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Gamma(2.0, 1.0))
        return a

    kernel = ShortRunLangevin(model)
    one = kernel.log_density({"a": torch.tensor(0.3), "b": torch.tensor(1.5)})
    other = kernel.log_density({"b": torch.tensor(1.5), "a": torch.tensor(0.3)})
    assert torch.equal(one[0], other[0])
    expected = dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.3)) + \
        dist.Gamma(2.0, 1.0).log_prob(torch.tensor(1.5)) + math.log(1.5)  # Jacobian of exp
    assert one[0].item() == pytest.approx(expected.item())


def test_the_compiled_step_equals_the_eager_one_and_follows_the_schedule_without_recompiling():
    from torch._dynamo.utils import counters

    from pyro_sparsegen.infer.transition import COMPILE_AFTER

    schedule = psg.schedules.Schedule(psg.schedules.Curve("linear", 1.0, 0.2, 0, 30), 1.0,
                                      psg.schedules.Curve("exponential", 1.0, 0.05, 0, 30))
    model = psg.SparseGenerator(psg.MLPGenerator(4, (1, 8, 8), hidden=(8,)), schedule=schedule)
    x = torch.rand(6, 1, 8, 8)
    options = dict(noise=False, prior_step="semi-implicit", num_steps=5)
    fast = ShortRunLangevin(model, compile=True, **options)
    eager = ShortRunLangevin(model, **options)
    before = counters["stats"]["unique_graphs"]
    for _ in range(COMPILE_AFTER + 1):  # a target is compiled once it has run three times
        fast.infer(x)
    dynamics = next(iter(fast._transitions.values()))
    assert dynamics.compiled and dynamics.compile_seconds > 0, dynamics.failed
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > before  # compiled, and what runs from now on is the compiled step
    assert isinstance(dynamics.graph_step, torch._dynamo.eval_frame.OptimizedModule)
    for iteration in range(1, 30, 3):  # the schedule moves: no recompile
        model.iteration = iteration
        torch.testing.assert_close(fast.infer(x)["z"], eager.infer(x)["z"], rtol=1e-5,
                                   atol=1e-6)
    assert counters["stats"]["unique_graphs"] == graphs
    # with the noise on, the random numbers are drawn outside: the same draws
    noisy = dict(noise=True, prior_step="explicit", num_steps=5)
    fast, eager = ShortRunLangevin(model, compile=True, **noisy), ShortRunLangevin(model, **noisy)
    for _ in range(COMPILE_AFTER + 1):
        fast.infer(x)
    pyro.set_rng_seed(3)
    a = fast.infer(x)["z"]
    pyro.set_rng_seed(3)
    torch.testing.assert_close(a, eager.infer(x)["z"], rtol=1e-5, atol=1e-6)


def test_sample_chains_starts_where_it_is_told(float64):
    model = sparse_model()
    x = torch.rand(3, 1, 4, 4)
    start = {"z": torch.full((2, 3, 4), 0.3)}
    kernel = ShortRunLangevin(model, metropolis=True, step_size=1e-9, crossing=False,
                              adapt_step_size=False)
    samples, _ = kernel.sample_chains(x, num_chains=2, num_draws=2, warmup_steps=0,
                                      initial=start)
    torch.testing.assert_close(samples["z"][:, 0], start["z"], atol=1e-6, rtol=0)


def test_the_former_names_of_the_transition_warn_and_point_to_it():
    import importlib
    import sys

    from pyro_sparsegen import infer
    from pyro_sparsegen.infer.transition import Transition

    with pytest.warns(DeprecationWarning, match="infer.transition.Transition"):
        assert infer.Dynamics is Transition
    sys.modules.pop("pyro_sparsegen.infer.derived", None)
    with pytest.warns(DeprecationWarning, match="infer.derived is deprecated"):
        assert importlib.import_module("pyro_sparsegen.infer.derived").Dynamics is Transition


def test_a_short_sample_chains_run_goes_through_pyro_and_a_long_one_derives_its_graph(float64):
    # tracing the model costs more than a short run's steps save (infer.chains.SHORT_RUN);
    # both give the same chains
    from pyro_sparsegen.infer.chains import SHORT_RUN

    def model(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", psg.SpikeAndSlab(0.3, 1.0, 0.05).expand([3]).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1), 0.5), obs=x)

    x = torch.tensor([0.3, -1.0])
    runs = {}
    for n in (SHORT_RUN - 1, SHORT_RUN):
        kernel = ShortRunLangevin(model, metropolis=True)
        torch.manual_seed(0)
        runs[n], _ = kernel.sample_chains(x, num_chains=2, num_draws=n, warmup_steps=0)
        runs[n, "graph"] = next(iter(kernel._transitions.values())).using_graph
    assert runs[SHORT_RUN - 1, "graph"] is False and runs[SHORT_RUN, "graph"] is True
    torch.testing.assert_close(runs[SHORT_RUN - 1]["z"], runs[SHORT_RUN]["z"][:, :SHORT_RUN - 1])
