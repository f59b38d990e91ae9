import math

import arviz as az
import numpy as np
import pyro
import pytest
import torch
import xarray as xr
from diagnostics_examples import tiny_model

import pyro_sparsegen as psg
from pyro_sparsegen.diagnostics import inference_data, metrics


@pytest.fixture(scope="module")
def sampled():
    model = tiny_model()
    torch.manual_seed(1)
    x = torch.rand(5, 1, 8, 8)
    labels = np.array([3, 1, 3, 1, 7])
    idata = inference_data.sample_posterior(model, x, labels=labels, chains=2, draws=20,
                                            warmup=10, source="runs/demo/checkpoint.h5",
                                            prior_step="explicit")
    return model, x, labels, idata


# ------------------------------------------------------------------------------------------
# sample_posterior


def test_sample_posterior_groups_dims_coords(sampled):
    model, x, labels, idata = sampled
    assert set(idata.groups()) == {"posterior", "sample_stats", "log_likelihood",
                                   "observed_data", "constant_data"}
    post = idata.posterior
    assert post["z"].dims == ("chain", "draw", "image", "latent")
    assert post["z"].shape == (2, 20, 5, 8)
    assert post["inclusion_probability"].dims == post["z"].dims
    np.testing.assert_array_equal(post["image"].values, np.arange(5))
    np.testing.assert_array_equal(post["latent"].values, np.arange(8))
    stats = idata.sample_stats
    assert stats["lp"].dims == ("chain", "draw", "image")
    assert stats["diverging"].dims == ("chain", "draw", "image")
    assert stats["diverging"].dtype == bool
    assert stats["step_size"].dims == ("chain", "draw", "image")  # adapted per image
    assert stats["acceptance_rate"].dims == ("chain", "draw", "image")  # MALA by default
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "image")
    assert idata.observed_data["x"].dims == ("image", "channel", "height", "width")
    np.testing.assert_array_equal(idata.observed_data["x"].values, x.numpy())
    assert idata.constant_data["label"].dims == ("image",)
    np.testing.assert_array_equal(idata.constant_data["label"].values, labels)


def test_sample_posterior_attrs(sampled):
    _, _, _, idata = sampled
    attrs = idata.posterior.attrs
    assert attrs["slab_weight"] == pytest.approx(0.1)
    assert attrs["slab_scale"] == pytest.approx(1.0)
    assert attrs["spike_scale"] == pytest.approx(0.1)
    assert attrs["iteration"] == 0
    assert attrs["source"] == "runs/demo/checkpoint.h5"
    assert attrs["warmup_steps"] == 10 and attrs["step_size"] == pytest.approx(0.05)
    assert attrs["prior_step"] == "explicit" and attrs["noise"] == 1
    assert attrs["sampler"] == "MALA (exact)"
    assert attrs["crossing"] == 1 and attrs["init"] == "prior"


def test_sample_posterior_values_match_the_model(sampled):
    model, x, _, idata = sampled
    z = torch.as_tensor(idata.posterior["z"].values)
    with torch.no_grad():  # by hand, with torch's own distributions
        prob = model.inclusion_probability(z)
        log_prior = model.prior().log_prob(z).sum(-1)
        log_lik = torch.distributions.Normal(model.network(z), model.noise_scale).log_prob(
            x).sum((-3, -2, -1))
    np.testing.assert_allclose(idata.posterior["inclusion_probability"].values, prob.numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(idata.log_likelihood["x"].values, log_lik.numpy(), rtol=1e-4,
                               atol=1e-3)
    np.testing.assert_allclose(idata.sample_stats["lp"].values, (log_prior + log_lik).numpy(),
                               rtol=1e-4, atol=1e-3)


def test_sample_posterior_metropolis_and_no_labels():
    model = tiny_model()
    x = torch.rand(3, 1, 8, 8)
    idata = inference_data.sample_posterior(model, x, chains=2, draws=5, warmup=2,
                                            metropolis=True, log_likelihood=False)
    assert "constant_data" not in idata.groups()
    assert "log_likelihood" not in idata.groups()
    rate = idata.sample_stats["acceptance_rate"]
    assert rate.dims == ("chain", "draw", "image")
    assert ((rate >= 0) & (rate <= 1)).all()
    assert idata.posterior.attrs["metropolis"] == 1


def test_sample_posterior_bad_input():
    model = tiny_model()
    with pytest.raises(ValueError, match="labels"):
        inference_data.sample_posterior(model, torch.rand(3, 1, 8, 8), labels=[0, 1], chains=1,
                                        draws=2)
    with pytest.raises(ValueError, match="x must be"):
        inference_data.sample_posterior(model, torch.rand(3, 64), chains=1, draws=2)


def test_netcdf_round_trip(sampled, tmp_path):
    _, _, _, idata = sampled
    path = tmp_path / "idata.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        xr.testing.assert_identical(back[group].drop_attrs(), idata[group].drop_attrs())
    assert back.posterior.attrs["source"] == "runs/demo/checkpoint.h5"
    assert back.posterior.attrs["slab_weight"] == pytest.approx(0.1)
    xr.testing.assert_allclose(metrics.image_sparsity(back), metrics.image_sparsity(idata))


# ------------------------------------------------------------------------------------------
# The az.from_pyro path


def ran_mcmc(kernel, x, num_samples, warmup_steps):
    """A ``pyro.infer.MCMC`` of one chain of ``kernel``, run on ``x``."""
    mcmc = pyro.infer.MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps,
                           num_chains=1, disable_progbar=True)
    mcmc.run(x)
    return mcmc


def test_from_pyro_with_pyro_dims_and_inclusion_probability():
    model = tiny_model()
    x = torch.rand(4, 1, 8, 8)
    mcmc = ran_mcmc(psg.ShortRunLangevin(model, metropolis=True), x, 12, 4)
    idata = az.from_pyro(mcmc, **inference_data.pyro_dims(model, x))
    assert idata.posterior["z"].dims == ("chain", "draw", "image", "latent")
    np.testing.assert_array_equal(idata.posterior["image"].values, np.arange(4))
    assert idata.observed_data["x"].dims == ("image", "channel", "height", "width")
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "image")
    inference_data.add_inclusion_probability(idata, model)
    prob = idata.posterior["inclusion_probability"]
    assert prob.dims == idata.posterior["z"].dims
    expected = model.inclusion_probability(torch.as_tensor(idata.posterior["z"].values))
    np.testing.assert_allclose(prob.values, expected.numpy(), rtol=1e-6)
    sparsity = metrics.image_sparsity(idata)
    assert sparsity["inactive_inclusion"].dims == ("image",)
    conv = metrics.convergence(idata, top=3)
    assert conv["z_rhat"].sizes == {"image": 4, "latent": 3}


def test_kernel_stats_from_the_mcmc_and_from_the_kernel():
    model = tiny_model()
    kernel = psg.ShortRunLangevin(model, metropolis=True)
    mcmc = ran_mcmc(kernel, torch.rand(3, 1, 8, 8), 6, 2)
    assert len(inference_data.mcmc_chain_statistics(mcmc)) == 1
    by_mcmc = inference_data.add_kernel_stats(az.from_pyro(mcmc), mcmc)
    by_kernel = inference_data.add_kernel_stats(az.from_pyro(mcmc), kernel)
    for name in ("acceptance_rate", "step_size"):
        assert by_mcmc.sample_stats[name].shape == (1, 6, 3)
        xr.testing.assert_identical(by_mcmc.sample_stats[name], by_kernel.sample_stats[name])
    with pytest.raises(ValueError, match="no ShortRunLangevin statistics"):
        inference_data.add_kernel_stats(az.from_pyro(mcmc), pyro.infer.MCMC(
            psg.ShortRunLangevin(model), num_samples=6, warmup_steps=2, disable_progbar=True))


def test_add_inclusion_probability_needs_a_spike_and_slab_prior():
    class NoInclusion(psg.SparseGenerator):
        def prior(self):
            return pyro.distributions.Laplace(torch.tensor(0.0), torch.tensor(1.0))

    model = NoInclusion(psg.MLPGenerator(4, (1, 8, 8), hidden=(8,)))
    idata = az.from_dict(posterior={"z": np.zeros((1, 3, 2, 4))},
                         dims={"z": ["image", "latent"]})
    with pytest.raises(ValueError, match="inclusion probability"):
        inference_data.add_inclusion_probability(idata, model)
    idata = inference_data.sample_posterior(model, torch.rand(2, 1, 8, 8), chains=1, draws=3,
                                            prior_step="explicit")
    assert "inclusion_probability" not in idata.posterior
    assert "inactive_inclusion" not in metrics.image_sparsity(idata)
    with pytest.raises(ValueError, match="add_inclusion_probability"):
        metrics.code_usage(idata, by="inclusion")


# ------------------------------------------------------------------------------------------
# The posterior the defaults sample is the posterior (a generator that ignores z: the prior)


class ConstantGenerator(torch.nn.Module):
    """A generator whose image does not depend on ``z``: the posterior equals the prior."""

    def __init__(self, latent_dim, image_shape=(1, 4, 4)):
        super().__init__()
        self.latent_dim, self.image_shape = latent_dim, tuple(image_shape)
        self.image = torch.nn.Parameter(torch.full(self.image_shape, 0.5))

    def forward(self, z):
        return self.image.expand(*z.shape[:-1], *self.image_shape)


def prior_only(slab_weight, spike, latent_dim=20):
    return psg.SparseGenerator(ConstantGenerator(latent_dim).double(),
                               schedule=psg.schedules.constant(slab_weight, 1.0, spike))


def mass_within(threshold, slab_weight, spike):
    return slab_weight * math.erf(threshold / math.sqrt(2)) + \
        (1 - slab_weight) * math.erf(threshold / (spike * math.sqrt(2)))


@pytest.mark.parametrize("init", ["prior", "normal"])
def test_sample_posterior_defaults_give_the_prior_when_z_is_ignored(float64, init):
    # w 0.5, spike 0.04: exactly 0.579 of the mass within |z| <= 0.2, mean inclusion 0.5
    model = prior_only(0.5, 0.04)
    x = torch.rand(8, 1, 4, 4)
    torch.manual_seed(0)
    # the sampler's defaults (tempered, 12 ladders); shorter than the default lengths
    idata = inference_data.sample_posterior(model, x, init=None if init == "prior" else init,
                                            draws=100, warmup=400, thin=5)
    z = idata.posterior["z"]
    inside = float((abs(z) <= 0.2).mean())
    inclusion = float(idata.posterior["inclusion_probability"].mean())
    print(f"init {init}: P(|z| <= 0.2) {inside:.4f} vs exact {mass_within(0.2, 0.5, 0.04):.4f}; "
          f"mean inclusion {inclusion:.4f} vs 0.5")  # the figures (pytest -s)
    assert inside == pytest.approx(mass_within(0.2, 0.5, 0.04), abs=0.03)
    assert inclusion == pytest.approx(0.5, abs=0.03)
    # the chains move (a frozen sampler started at the target would pass the above): most
    # coordinates visit both sides of the threshold during the draws
    crossed = ((abs(z) <= 0.2).any("draw") & (abs(z) > 0.2).any("draw")).mean()
    assert float(crossed) > 0.5


def test_mala_from_zeros_reaches_the_slab_on_a_stiff_spike(float64):
    # spike 0.01, w 0.3: 28.8 % of the mass lies beyond |z| > 0.05. From zeros, the
    # semi-implicit proposal never leaves the spike and explicit MALA needs thousands of steps;
    # the crossing move gets there.
    model = prior_only(0.3, 0.01)
    kernel = psg.ShortRunLangevin(model, metropolis=True, init="zeros")
    torch.manual_seed(0)
    samples, _ = kernel.sample_chains(torch.rand(10, 1, 4, 4), num_chains=4, num_draws=200,
                                      warmup_steps=300, thin=5)
    outside = float((samples["z"].abs() > 0.05).double().mean())
    print(f"spike 0.01 from zeros: P(|z| > 0.05) {outside:.4f} vs exact "
          f"{1 - mass_within(0.05, 0.3, 0.01):.4f}")
    assert outside == pytest.approx(1 - mass_within(0.05, 0.3, 0.01), abs=0.04)


def test_a_plain_pyro_function_gets_its_code_sites_inclusion_probability(float64):
    # not wrapped in FunctionModel: the probability comes from the z site's own distribution
    import pyro.distributions as dist

    w = torch.arange(12.0).reshape(4, 3) / 10

    def model(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", psg.SpikeAndSlab(0.3, 1.0, 0.05).expand([3]).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T, 0.5).to_event(1),
                        obs=x.reshape(x.shape[0], -1))

    x = torch.rand(2, 1, 2, 2)
    idata = inference_data.sample_posterior(model, x, chains=2, draws=5, warmup=4)
    z = torch.as_tensor(idata.posterior["z"].values)
    expected = psg.SpikeAndSlab(0.3, 1.0, 0.05).inclusion_probability(z).numpy()
    np.testing.assert_allclose(idata.posterior["inclusion_probability"].values, expected,
                               rtol=1e-5)


def test_warm_start_begins_every_chain_at_the_noise_free_runs_end():
    # no warm-up, two draws of one transition each: they sit next to where the noise-free
    # steps from each chain's own prior draw ended, far above a prior draw's log density
    # a sharp likelihood (noise 0.1), so that a prior draw is far from every mode
    torch.manual_seed(0)
    network = psg.MLPGenerator(8, (1, 8, 8), hidden=(16,))
    model = psg.SparseGenerator(network, schedule=psg.schedules.constant(0.1), noise_scale=0.1)
    x = torch.rand(3, 1, 8, 8)
    lp = {}
    for steps in (0, 30):
        torch.manual_seed(0)
        idata = inference_data.sample_posterior(model, x, chains=2, draws=2, warmup=0, thin=1,
                                                tempering=None, warm_start=steps, step_size=0.2)
        lp[steps] = idata.sample_stats["lp"].values
        assert idata.posterior.attrs["warm_start"] == steps
    # (per chain the gain after a transition is a draw: 0.2-0.6 nats at the least on four
    # seeds of this set-up, 4-7 on average; compared element-wise it hung on the random stream)
    gain = lp[30] - lp[0]
    assert gain.mean() > 2 and (gain > -1).all(), gain
    # the starts stay dispersed: one prior draw each, not one mode for all
    assert np.ptp(lp[30], axis=0).min() > 0
