import math

import arviz as az
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import xarray as xr

from pyro_sparsegen import diagnostics as diag
from pyro_sparsegen import plots


def check_png(path):
    """The file is a non-empty PNG that matplotlib reads back as an RGBA image."""
    path = str(path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 50 and image.shape[1] > 50
    assert image.std() > 0  # something was drawn
    return image


@pytest.fixture(autouse=True)
def no_pyplot_figures_left():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before


@pytest.fixture(scope="module")
def idata():
    rng = np.random.default_rng(0)
    gate = rng.random((2, 30, 4, 6)) < 0.4
    z = np.where(gate, rng.normal(0.0, 1.0, gate.shape), rng.normal(0.0, 0.05, gate.shape))
    z[:, :, :, 0] += 2.0  # one always-used dimension
    # a coordinate that switches between spike and slab half-way through each chain
    z[:, :15, 1, 2] = rng.normal(0.0, 0.05, (2, 15))
    z[:, 15:, 1, 2] = rng.normal(1.5, 0.1, (2, 15))
    prob = np.where(np.abs(z) > 0.2, 0.9, 0.05)
    return az.from_dict(posterior={"z": z, "inclusion_probability": prob},
                        constant_data={"label": np.array([0, 1, 0, 1])},
                        dims={"z": ["image", "latent"],
                              "inclusion_probability": ["image", "latent"],
                              "label": ["image"]})


# ------------------------------------------------------------------------------------------
# Training figures


def test_plot_training_curves(tmp_path):
    metrics = [{"iteration": i, "epoch": i // 10, "train_mse": 0.05 / (i + 1),
                "test_mse": 0.06 / (i + 1), "zeroed_mse": 0.07 / (i + 1),
                "inactive_fraction_threshold": min(i / 20, 0.9),
                "inactive_fraction_inclusion": min(i / 25, 0.9),
                "slab_weight": max(1 - i / 10, 0.01), "slab_scale": 1.0, "spike_scale": 0.1,
                "log_joint": -100.0 + i} for i in range(0, 40, 4)]
    out = plots.plot_training_curves(metrics, tmp_path / "curves.png")
    assert out == str(tmp_path / "curves.png")
    wide = check_png(out)
    # missing keys, strings from a CSV reader, blanks: plotted where they make sense
    partial = [{"iteration": "1", "test_mse": "0.5", "slab_weight": ""},
               {"iteration": "2", "test_mse": "nan"}, {"iteration": 3, "test_mse": 0.2}]
    narrow = check_png(plots.plot_training_curves(partial, tmp_path / "partial.png"))
    assert narrow.shape[1] < wide.shape[1]
    check_png(plots.plot_training_curves([], tmp_path / "empty.png"))


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_image_grid(tmp_path, channels):
    originals = np.random.default_rng(0).random((6, channels, 8, 8))
    recon = torch.rand(4, channels, 8, 8)  # a shorter row is padded
    out = plots.plot_image_grid([originals, recon], tmp_path / "grid.png",
                                titles=["originals", "reconstructions"])
    check_png(out)


def test_plot_image_grid_bad_input(tmp_path):
    with pytest.raises(ValueError, match="titles"):
        plots.plot_image_grid([np.zeros((2, 1, 4, 4))], tmp_path / "g.png", titles=["a", "b"])
    with pytest.raises(ValueError, match="1 or 3"):
        plots.plot_image_grid([np.zeros((2, 2, 4, 4))], tmp_path / "g.png")
    with pytest.raises(ValueError, match="at least one row"):
        plots.plot_image_grid([], tmp_path / "g.png")


def test_plot_code_usage(tmp_path):
    check_png(plots.plot_code_usage(np.linspace(0, 1, 100), tmp_path / "usage.png",
                                    title="usage"))
    check_png(plots.plot_code_usage(torch.zeros(5), tmp_path / "sub" / "zeros.png"))


# ------------------------------------------------------------------------------------------
# Analysis figures


def test_plot_class_usage(tmp_path, idata):
    cu = diag.class_usage(idata)
    check_png(plots.plot_class_usage(cu, tmp_path / "class.png"))
    check_png(plots.plot_class_usage(np.random.default_rng(1).random((10, 100)),
                                     tmp_path / "class_np.png"))


def test_plot_sparsity_histogram(tmp_path, idata):
    check_png(plots.plot_sparsity_histogram(diag.image_sparsity(idata), tmp_path / "h.png"))
    check_png(plots.plot_sparsity_histogram({"magnitude": [0.1, 0.5, 0.9]},
                                            tmp_path / "h2.png"))


def test_plot_rank_and_trace(tmp_path, idata):
    check_png(plots.plot_rank(idata, tmp_path / "rank.png", latents=[0, 2], images=[0, 1]))
    check_png(plots.plot_trace(idata, tmp_path / "trace.png", latents=[0, 2], images=[1]))
    check_png(plots.plot_rank(idata, tmp_path / "rank1.png", latents=3, images=2,
                              var_name="inclusion_probability"))


def test_plot_spike_slab(tmp_path, idata):
    draws = idata.posterior["z"].sel(image=1, latent=2).values.ravel()
    intervals = az.hdi(draws, hdi_prob=0.94, multimodal=True)
    assert np.isfinite(intervals).all(1).sum() == 2  # spike and slab apart
    check_png(plots.plot_spike_slab(idata, tmp_path / "ss.png", image=1, latent=2))


def test_plot_rhat(tmp_path):
    rhat = xr.DataArray(np.r_[np.linspace(1.0, 1.3, 50), np.nan], dims="scalar")
    check_png(plots.plot_rhat(rhat, tmp_path / "rhat.png"))
    check_png(plots.plot_rhat(np.array([math.nan]), tmp_path / "rhat_empty.png"))


def test_plot_ladder(tmp_path):
    import arviz as az
    import xarray as xr

    idata = az.from_dict(posterior={"z": np.zeros((2, 3, 4, 5))})
    idata.add_groups(sample_stats={"lp": np.zeros((2, 3, 4))})
    ss = idata.sample_stats
    ss["beta"] = xr.DataArray(np.array([[1.0] * 4, [0.3] * 4, [0.0] * 4]), dims=("level", "image"))
    ss["swap_accept_prob"] = xr.DataArray(np.full((2, 4), 0.4), dims=("level_pair", "image"))
    ss["round_trips"] = xr.DataArray(np.arange(8).reshape(2, 4), dims=("chain", "image"))
    check_png(plots.plot_ladder(idata, tmp_path / "ladder.png"))
