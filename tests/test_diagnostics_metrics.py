import math

import arviz as az
import numpy as np
import pytest
import xarray as xr
from diagnostics_examples import DRAWS, synthetic_idata

from pyro_sparsegen.diagnostics import metrics


# ------------------------------------------------------------------------------------------
# Metrics on the synthetic posterior


def test_image_sparsity_known_values():
    sp = metrics.image_sparsity(synthetic_idata())
    np.testing.assert_allclose(sp["inactive_magnitude"].values, [0.8, 0.2, 0.9])
    np.testing.assert_allclose(sp["inactive_inclusion"].values, [0.8, 0.4, 0.9])
    assert sp["inactive_magnitude_hdi"].dims == ("image", "hdi")
    hdi = sp["inactive_magnitude_hdi"]
    np.testing.assert_allclose(hdi.sel(image=0).values, [0.8, 0.8])
    np.testing.assert_allclose(hdi.sel(image=2).values, [0.8, 1.0])


def test_inactive_fraction_per_draw():
    frac = metrics.inactive_fraction(synthetic_idata(), by="magnitude")
    assert frac.dims == ("chain", "draw", "image")
    np.testing.assert_allclose(frac.sel(image=2, chain=0).values, [1.0, 0.8] * (DRAWS // 2))


def test_code_usage_known_values():
    idata = synthetic_idata()
    usage = metrics.code_usage(idata, by="magnitude")
    assert usage.dims == ("latent",)
    np.testing.assert_allclose(usage.values, [2 / 3, 1 / 3, 1 / 3, 0.5, 0.0])
    usage = metrics.code_usage(idata, by="inclusion")
    np.testing.assert_allclose(usage.values, [2 / 3, 1 / 3, 0.0, 0.5, 0.0])
    # a larger threshold switches off image 0's 1.5 and image 2's 1.0
    np.testing.assert_allclose(
        metrics.code_usage(idata, by="magnitude", threshold=1.6).values,
        [1 / 3, 1 / 3, 1 / 3, 1 / 3, 0.0])


def test_dead_dimensions():
    idata = synthetic_idata()
    dead = metrics.dead_dimensions(idata, by="magnitude")
    np.testing.assert_array_equal(dead.values, [False, False, False, False, True])
    np.testing.assert_array_equal(dead.latent[dead].values, [4])
    dead = metrics.dead_dimensions(idata, by="inclusion")
    np.testing.assert_array_equal(dead.latent[dead].values, [2, 4])
    # usage 1/3 counts as dead only for a tolerance above it
    dead = metrics.dead_dimensions(idata, by="magnitude", tol=0.4)
    np.testing.assert_array_equal(dead.latent[dead].values, [1, 2, 4])


def test_class_usage_and_active_sets():
    idata = synthetic_idata()
    cu = metrics.class_usage(idata, by="magnitude")
    assert cu.dims == ("class", "latent")
    np.testing.assert_array_equal(cu["class"].values, [0, 1])
    np.testing.assert_array_equal(cu["count"].values, [2, 1])
    np.testing.assert_allclose(cu.sel({"class": 0}).values, [0.5, 0, 0, 0.25, 0])
    np.testing.assert_allclose(cu.sel({"class": 1}).values, [1, 1, 1, 1, 0])
    sets = metrics.class_active_sets(idata, by="magnitude", min_usage=0.5)
    np.testing.assert_array_equal(sets.values, [[1, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    cj = metrics.class_jaccard(idata, by="magnitude")
    np.testing.assert_allclose(cj.jaccard.values, [[1, 0.25], [0.25, 1]])
    assert float(cj.mean_off_diagonal) == pytest.approx(0.25)
    # labels can be given instead of constant_data
    cu2 = metrics.class_usage(synthetic_idata(labels=None), labels=[0, 1, 0], by="magnitude")
    xr.testing.assert_allclose(cu, cu2)


def test_class_jaccard_of_known_sets():
    sets = xr.DataArray([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dims=("class", "latent"),
                        coords={"class": ["a", "b", "c"]}).astype(bool)
    cj = metrics.class_jaccard(sets)
    jac = cj.jaccard
    assert jac.dims == ("class", "class_other")
    assert jac.sel({"class": "a", "class_other": "b"}).item() == pytest.approx(1 / 3)
    assert jac.sel({"class": "a", "class_other": "c"}).item() == 0.0
    assert math.isnan(jac.sel({"class": "c", "class_other": "c"}).item())
    assert float(cj.mean_off_diagonal) == pytest.approx(1 / 9)


def test_class_metrics_need_labels():
    idata = synthetic_idata(labels=None)
    with pytest.raises(ValueError, match="labels"):
        metrics.class_usage(idata)
    with pytest.raises(ValueError, match="shape"):
        metrics.class_usage(idata, labels=[0, 1])


def test_bad_criterion():
    with pytest.raises(ValueError, match="by must be one of"):
        metrics.code_usage(synthetic_idata(), by="size")


def test_top_dimensions():
    usage = metrics.code_usage(synthetic_idata(), by="magnitude")
    np.testing.assert_array_equal(metrics.top_dimensions(usage, 2), [0, 3])


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
    conv = metrics.convergence(idata)
    assert conv["z_rhat"].dims == ("image", "latent")
    xr.testing.assert_allclose(conv["z_rhat"], az.rhat(idata.posterior)["z"])
    xr.testing.assert_allclose(conv["inclusion_probability_ess"],
                               az.ess(idata.posterior)["inclusion_probability"])
    assert (conv["z_rhat"].sel(image=0) > 1.5).all()
    assert (conv["z_rhat"].sel(image=[1, 2]) < 1.1).all()
    for name in ("inactive_magnitude_rhat", "inactive_inclusion_ess", "lp_rhat"):
        assert conv[name].dims == ("image",)
    top = metrics.convergence(idata, top=2, reduced=False)
    assert set(top.data_vars) == {"z_rhat", "z_ess", "inclusion_probability_rhat",
                                  "inclusion_probability_ess"}
    assert top.sizes["latent"] == 2


def test_convergence_of_constant_chains_is_nan_not_a_warning():
    idata = synthetic_idata()  # image 0 never moves
    conv = metrics.convergence(idata)
    assert np.isnan(conv["z_rhat"].sel(image=0, latent=1).item())


def test_inclusion_at_the_cutoff_is_active_as_in_training():
    idata = synthetic_idata()
    idata.posterior["inclusion_probability"][:] = 0.5
    assert bool(metrics.active(idata, by="inclusion").all())
    assert float(metrics.code_usage(idata, by="inclusion").min()) == 1.0


def _reductions(rhat, ess):
    return xr.Dataset({"lp_rhat": ("image", np.asarray(rhat, dtype=float)),
                       "lp_ess": ("image", np.asarray(ess, dtype=float))})


def test_the_verdict_rule_of_issue_20():
    from pyro_sparsegen.diagnostics.metrics import convergence_verdict
    good = [1.0] * 199 + [1.04]  # 99.5 % <= 1.01, all <= 1.05
    assert convergence_verdict(_reductions(good, [500] * 200))[0]
    assert not convergence_verdict(_reductions([1.0] * 199 + [1.06], [500] * 200))[0]
    assert not convergence_verdict(_reductions([1.0] * 197 + [1.02] * 3, [500] * 200))[0]
    assert not convergence_verdict(_reductions(good, [500] * 199 + [399]))[0]
    swaps = np.full((3, 200), 0.3)
    assert convergence_verdict(_reductions(good, [500] * 200), swap_accept_prob=swaps)[0]
    swaps[1, 7] = 0.0
    converged, _, line = convergence_verdict(_reductions(good, [500] * 200),
                                             swap_accept_prob=swaps)
    assert not converged and "never swapped" in line
