import math
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import pytest
import torch
import xarray as xr

import pyro_sparsegen as psg
from pyro_sparsegen import diagnostics as diag

CHAINS, DRAWS = 2, 10


# ------------------------------------------------------------------------------------------
# A synthetic posterior whose metrics are known by hand.
#
# 3 images x 5 latent dims, labels [0, 1, 0]:
#   image 0: z = [1.5, 0, 0, 0, 0]                     every draw
#   image 1: z = [2, 2, 2, 2, 0]                       every draw
#   image 2: z = [0, 0, 0, b, 0], b = 1 on odd draws, 0 on even draws
# Inclusion probability 0.95 where |z| > 0.2, else 0.02 -- except image 1, latent 2, which is
# 0.3 (large but "off" by inclusion). Latent 4 is pinned in the spike at 0 for every image.


def synthetic_idata(labels=(0, 1, 0)):
    z = np.zeros((CHAINS, DRAWS, 3, 5))
    z[:, :, 0, 0] = 1.5
    z[:, :, 1, :4] = 2.0
    z[:, 1::2, 2, 3] = 1.0
    prob = np.where(np.abs(z) > 0.2, 0.95, 0.02)
    prob[:, :, 1, 2] = 0.3
    groups = {"posterior": {"z": z, "inclusion_probability": prob}}
    if labels is not None:
        groups["constant_data"] = {"label": np.asarray(labels)}
    return az.from_dict(**groups, dims={"z": ["image", "latent"],
                                        "inclusion_probability": ["image", "latent"],
                                        "label": ["image"]})


def tiny_model(latent_dim=8, slab_weight=0.1):
    torch.manual_seed(0)
    network = psg.MLPGenerator(latent_dim, (1, 8, 8), hidden=(16,))
    return psg.SparseGenerator(network, schedule=psg.schedules.constant(slab_weight))


@pytest.fixture(scope="module")
def sampled():
    model = tiny_model()
    torch.manual_seed(1)
    x = torch.rand(5, 1, 8, 8)
    labels = np.array([3, 1, 3, 1, 7])
    idata = diag.sample_posterior(model, x, labels=labels, chains=2, draws=20, warmup=10,
                                  source="runs/demo/checkpoint.h5")
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
    idata = diag.sample_posterior(model, x, chains=2, draws=5, warmup=2, metropolis=True,
                                  log_likelihood=False)
    assert "constant_data" not in idata.groups()
    assert "log_likelihood" not in idata.groups()
    rate = idata.sample_stats["acceptance_rate"]
    assert rate.dims == ("chain", "draw", "image")
    assert ((rate >= 0) & (rate <= 1)).all()
    assert idata.posterior.attrs["metropolis"] == 1


def test_sample_posterior_bad_input():
    model = tiny_model()
    with pytest.raises(ValueError, match="labels"):
        diag.sample_posterior(model, torch.rand(3, 1, 8, 8), labels=[0, 1], chains=1, draws=2)
    with pytest.raises(ValueError, match="x must be"):
        diag.sample_posterior(model, torch.rand(3, 64), chains=1, draws=2)


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
    xr.testing.assert_allclose(diag.image_sparsity(back), diag.image_sparsity(idata))


# ------------------------------------------------------------------------------------------
# The az.from_pyro path


def test_from_pyro_with_pyro_dims_and_inclusion_probability():
    model = tiny_model()
    x = torch.rand(4, 1, 8, 8)
    kernel = psg.ShortRunLangevin(model, metropolis=True)
    mcmc = pyro.infer.MCMC(kernel, num_samples=12, warmup_steps=4, num_chains=1,
                           disable_progbar=True)
    mcmc.run(x)
    idata = az.from_pyro(mcmc, **diag.pyro_dims(model, x))
    assert idata.posterior["z"].dims == ("chain", "draw", "image", "latent")
    np.testing.assert_array_equal(idata.posterior["image"].values, np.arange(4))
    assert idata.observed_data["x"].dims == ("image", "channel", "height", "width")
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "image")
    diag.add_inclusion_probability(idata, model)
    prob = idata.posterior["inclusion_probability"]
    assert prob.dims == idata.posterior["z"].dims
    expected = model.inclusion_probability(torch.as_tensor(idata.posterior["z"].values))
    np.testing.assert_allclose(prob.values, expected.numpy(), rtol=1e-6)
    sparsity = diag.image_sparsity(idata)
    assert sparsity["inactive_inclusion"].dims == ("image",)
    conv = diag.convergence(idata, top=3)
    assert conv["z_rhat"].sizes == {"image": 4, "latent": 3}


def test_add_inclusion_probability_needs_a_spike_and_slab_prior():
    class NoInclusion(psg.SparseGenerator):
        def prior(self):
            return pyro.distributions.Laplace(torch.tensor(0.0), torch.tensor(1.0))

    model = NoInclusion(psg.MLPGenerator(4, (1, 8, 8), hidden=(8,)))
    idata = az.from_dict(posterior={"z": np.zeros((1, 3, 2, 4))},
                         dims={"z": ["image", "latent"]})
    with pytest.raises(ValueError, match="inclusion probability"):
        diag.add_inclusion_probability(idata, model)
    idata = diag.sample_posterior(model, torch.rand(2, 1, 8, 8), chains=1, draws=3,
                                  prior_step="explicit")
    assert "inclusion_probability" not in idata.posterior
    assert "inactive_inclusion" not in diag.image_sparsity(idata)
    with pytest.raises(ValueError, match="add_inclusion_probability"):
        diag.code_usage(idata, by="inclusion")


# ------------------------------------------------------------------------------------------
# Metrics on the synthetic posterior


def test_image_sparsity_known_values():
    sp = diag.image_sparsity(synthetic_idata())
    np.testing.assert_allclose(sp["inactive_magnitude"].values, [0.8, 0.2, 0.9])
    np.testing.assert_allclose(sp["inactive_inclusion"].values, [0.8, 0.4, 0.9])
    assert sp["inactive_magnitude_hdi"].dims == ("image", "hdi")
    hdi = sp["inactive_magnitude_hdi"]
    np.testing.assert_allclose(hdi.sel(image=0).values, [0.8, 0.8])
    np.testing.assert_allclose(hdi.sel(image=2).values, [0.8, 1.0])


def test_inactive_fraction_per_draw():
    frac = diag.inactive_fraction(synthetic_idata(), by="magnitude")
    assert frac.dims == ("chain", "draw", "image")
    np.testing.assert_allclose(frac.sel(image=2, chain=0).values, [1.0, 0.8] * (DRAWS // 2))


def test_code_usage_known_values():
    idata = synthetic_idata()
    usage = diag.code_usage(idata, by="magnitude")
    assert usage.dims == ("latent",)
    np.testing.assert_allclose(usage.values, [2 / 3, 1 / 3, 1 / 3, 0.5, 0.0])
    usage = diag.code_usage(idata, by="inclusion")
    np.testing.assert_allclose(usage.values, [2 / 3, 1 / 3, 0.0, 0.5, 0.0])
    # a larger threshold switches off image 0's 1.5 and image 2's 1.0
    np.testing.assert_allclose(diag.code_usage(idata, by="magnitude", threshold=1.6).values,
                               [1 / 3, 1 / 3, 1 / 3, 1 / 3, 0.0])


def test_dead_dimensions():
    idata = synthetic_idata()
    dead = diag.dead_dimensions(idata, by="magnitude")
    np.testing.assert_array_equal(dead.values, [False, False, False, False, True])
    np.testing.assert_array_equal(dead.latent[dead].values, [4])
    dead = diag.dead_dimensions(idata, by="inclusion")
    np.testing.assert_array_equal(dead.latent[dead].values, [2, 4])
    # usage 1/3 counts as dead only for a tolerance above it
    dead = diag.dead_dimensions(idata, by="magnitude", tol=0.4)
    np.testing.assert_array_equal(dead.latent[dead].values, [1, 2, 4])


def test_class_usage_and_active_sets():
    idata = synthetic_idata()
    cu = diag.class_usage(idata, by="magnitude")
    assert cu.dims == ("class", "latent")
    np.testing.assert_array_equal(cu["class"].values, [0, 1])
    np.testing.assert_array_equal(cu["count"].values, [2, 1])
    np.testing.assert_allclose(cu.sel({"class": 0}).values, [0.5, 0, 0, 0.25, 0])
    np.testing.assert_allclose(cu.sel({"class": 1}).values, [1, 1, 1, 1, 0])
    sets = diag.class_active_sets(idata, by="magnitude", min_usage=0.5)
    np.testing.assert_array_equal(sets.values, [[1, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    cj = diag.class_jaccard(idata, by="magnitude")
    np.testing.assert_allclose(cj.jaccard.values, [[1, 0.25], [0.25, 1]])
    assert float(cj.mean_off_diagonal) == pytest.approx(0.25)
    # labels can be given instead of constant_data
    cu2 = diag.class_usage(synthetic_idata(labels=None), labels=[0, 1, 0], by="magnitude")
    xr.testing.assert_allclose(cu, cu2)


def test_class_jaccard_of_known_sets():
    sets = xr.DataArray([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dims=("class", "latent"),
                        coords={"class": ["a", "b", "c"]}).astype(bool)
    cj = diag.class_jaccard(sets)
    jac = cj.jaccard
    assert jac.dims == ("class", "class_other")
    assert jac.sel({"class": "a", "class_other": "b"}).item() == pytest.approx(1 / 3)
    assert jac.sel({"class": "a", "class_other": "c"}).item() == 0.0
    assert math.isnan(jac.sel({"class": "c", "class_other": "c"}).item())
    assert float(cj.mean_off_diagonal) == pytest.approx(1 / 9)


def test_class_metrics_need_labels():
    idata = synthetic_idata(labels=None)
    with pytest.raises(ValueError, match="labels"):
        diag.class_usage(idata)
    with pytest.raises(ValueError, match="shape"):
        diag.class_usage(idata, labels=[0, 1])


def test_bad_criterion():
    with pytest.raises(ValueError, match="by must be one of"):
        diag.code_usage(synthetic_idata(), by="size")


def test_top_dimensions():
    usage = diag.code_usage(synthetic_idata(), by="magnitude")
    np.testing.assert_array_equal(diag.top_dimensions(usage, 2), [0, 3])


def test_convergence_against_arviz():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 50, 3, 5))
    z[1, :, 0, :] += 5.0  # chain 1 of image 0 sits elsewhere: large R-hat there
    prob = 1 / (1 + np.exp(-z))
    idata = az.from_dict(posterior={"z": z, "inclusion_probability": prob},
                         sample_stats={"lp": rng.normal(size=(4, 50, 3))},
                         dims={"z": ["image", "latent"],
                               "inclusion_probability": ["image", "latent"],
                               "lp": ["image"]})
    conv = diag.convergence(idata)
    assert conv["z_rhat"].dims == ("image", "latent")
    xr.testing.assert_allclose(conv["z_rhat"], az.rhat(idata.posterior)["z"])
    xr.testing.assert_allclose(conv["inclusion_probability_ess"],
                               az.ess(idata.posterior)["inclusion_probability"])
    assert (conv["z_rhat"].sel(image=0) > 1.5).all()
    assert (conv["z_rhat"].sel(image=[1, 2]) < 1.1).all()
    for name in ("inactive_magnitude_rhat", "inactive_inclusion_ess", "lp_rhat"):
        assert conv[name].dims == ("image",)
    top = diag.convergence(idata, top=2, reduced=False)
    assert set(top.data_vars) == {"z_rhat", "z_ess", "inclusion_probability_rhat",
                                  "inclusion_probability_ess"}
    assert top.sizes["latent"] == 2


def test_convergence_of_constant_chains_is_nan_not_a_warning():
    idata = synthetic_idata()  # image 0 never moves
    conv = diag.convergence(idata)
    assert np.isnan(conv["z_rhat"].sel(image=0, latent=1).item())


def test_summary_tables():
    text = diag.summary_tables(synthetic_idata(), top=3)
    for heading in ("## Overall sparsity", "## Per-image inactive fraction",
                    "## Top 3 dimensions", "## Dead dimensions", "## Per-class usage",
                    "### Jaccard overlap", "## Convergence", "## Divergences"):
        assert heading in text
    assert "| abs(z) <= 0.2 | 0.633 |" in text  # (0.8 + 0.2 + 0.9) / 3
    assert "| inclusion | 2 | 2, 4 |" in text
    assert "| magnitude | 1 | 4 |" in text
    # by inclusion, class 0 uses {0} (latent 0 in half its images), class 1 uses {0, 1, 3}
    assert "Mean off-diagonal Jaccard: 0.333" in text


# ------------------------------------------------------------------------------------------
# analyze


def test_analyze_writes_everything(tmp_path):
    model = tiny_model()
    x = torch.rand(6, 1, 8, 8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    result = diag.analyze(model, x, tmp_path / "out", labels=labels, chains=2, draws=20,
                          warmup=5, source="somewhere.h5", progress=False)
    for key in ("inactive_fraction_magnitude", "inactive_fraction_inclusion", "max_rhat"):
        assert 0.0 <= result[key] < math.inf
    # undefined (NaN) when no class has an active set, as in this untrained model
    assert math.isnan(result["class_jaccard"]) or 0.0 <= result["class_jaccard"] <= 1.0
    assert isinstance(result["converged"], bool)
    assert result["dead_dimensions"] >= 0 and result["divergences"] >= 0
    assert result["seconds"] > 0
    idata = az.from_netcdf(result["idata"])
    assert idata.posterior["z"].shape == (2, 20, 6, 8)
    assert idata.posterior.attrs["source"] == "somewhere.h5"
    text = Path(result["summary"]).read_text()
    assert "## Overall sparsity" in text and "Jaccard" in text
    assert set(result["figures"]) == {"code_usage", "class_usage", "sparsity_histogram",
                                      "rank", "trace", "spike_slab", "rhat"}
    for path in result["figures"].values():
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------
# The analysis script


def _script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "analyses" / "sparsity_diagnostics.py"
    spec = importlib.util.spec_from_file_location("sparsity_diagnostics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert _script().main(["--demo", "--images", "12", "--chains", "2", "--draws", "10",
                           "--warmup", "3", "--latent-dim", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "inactive_fraction_inclusion" in printed and "class_jaccard" in printed
    assert (out / "idata.nc").stat().st_size > 0 and (out / "summary.md").exists()
    assert az.from_netcdf(str(out / "idata.nc")).posterior["z"].shape == (2, 10, 12, 4)


def test_script_errors(tmp_path, capsys):
    script = _script()
    with pytest.raises(SystemExit) as e:
        script.main(["--demo", "--images", "0", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--images must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        script.main(["--out", str(tmp_path)])  # neither --run nor --demo
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        script.main(["--run", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert "sparsity_diagnostics:" in str(e.value.code)


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
    x = torch.rand(20, 1, 4, 4)
    torch.manual_seed(0)
    idata = diag.sample_posterior(model, x, init=None if init == "prior" else init)
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
