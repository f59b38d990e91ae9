import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from matplotlib.image import imread

from pyro_sparsegen.cli import main

FAST = ["--data", "digits", "--epochs", "1", "--latent-dim", "5", "--num-steps", "5",
        "--eval-images", "60", "--batch-size", "200", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(out), *FAST]) == 0
    return out


def test_train_writes_run_folder(run_dir, capsys):
    for name in ("checkpoint.h5", "metrics.csv", "training_curves.png", "reconstructions.png",
                 "samples.png", "code_usage.png"):
        assert os.path.getsize(run_dir / name) > 0


def test_train_resume_extends_run(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *FAST]) == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    with open(out / "metrics.csv") as f:
        assert len(f.read().strip().splitlines()) == 3  # header + 2 epochs


def test_encode_writes_codes(run_dir, tmp_path):
    out = tmp_path / "codes.h5"
    assert main(["encode", str(run_dir), "--split", "test", "--out", str(out), "--quiet"]) == 0
    with h5py.File(out) as f:
        n = f["z"].shape[0]
        assert f["z"].shape == (n, 5) and f["inclusion_probability"].shape == (n, 5)
        assert f["mse"].shape == (n,) and f["labels"].shape == (n,)
        assert np.isfinite(f["z"][()]).all()
        assert f.attrs["split"] == "test"


def test_sample_and_reconstruct_write_pngs(run_dir, tmp_path):
    samples, recon = tmp_path / "s.png", tmp_path / "r.png"
    assert main(["sample", str(run_dir), "--num", "10", "--out", str(samples)]) == 0
    assert main(["reconstruct", str(run_dir), "--noise", "0.3", "--num", "6",
                 "--out", str(recon)]) == 0
    assert imread(samples).ndim == 3 and imread(recon).ndim == 3


def test_config_file_and_flags(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[network]\nlatent_dim = 3\nhidden = [8]\n[langevin]\nnum_steps = 3\n'
                      '[prior]\nkind = "learned"\n')
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--config", str(config), "--data", "digits",
                 "--epochs", "1", "--eval-images", "20", "--quiet", "--device", "cpu",
                 "--prior", "learned-scale"]) == 0  # the flag wins over the file
    from pyro_sparsegen.builders import load_run

    model, cfg, _ = load_run(out)
    assert model.latent_dim == 3 and cfg.network.hidden == (8,) and cfg.langevin.num_steps == 3
    assert cfg.prior.kind == model.prior_kind == "learned-scale"
    assert model.slab_log_scale.shape == (3,)


def test_module_entry_point_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pyro_sparsegen", "sample",
                           str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "no such run folder" in proc.stderr


def test_analyze_writes_idata_summary_and_figures(run_dir, tmp_path):
    import arviz as az

    out = tmp_path / "analysis"
    assert main(["analyze", str(run_dir), "--images", "12", "--chains", "2", "--draws", "10",
                 "--warmup", "5", "--out", str(out), "--quiet"]) == 0
    idata = az.from_netcdf(out / "idata.nc")
    assert idata.posterior["z"].shape == (2, 10, 12, 5)
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data",
                  "constant_data"):
        assert group in idata.groups()
    assert "inactive when" in (out / "summary.md").read_text()
    assert os.path.getsize(out / "code_usage.png") > 0
