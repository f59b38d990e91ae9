"""The run's dtype (``--dtype`` / ``TrainConfig.dtype``): recorded in the checkpoint and
honoured by resume, encode and analyze; the command leaves torch's default dtype as it was."""

import arviz as az
import h5py
import pytest
import torch

from pyro_sparsegen import checkpoint
from pyro_sparsegen.builders import load_run, run_dtype
from pyro_sparsegen.cli import main
from pyro_sparsegen.config import ConfigError, TrainConfig

TINY = ["--data", "digits", "--latent-dim", "4", "--num-steps", "3", "--eval-images", "20",
        "--batch-size", "300", "--quiet", "--device", "cpu"]


def test_a_float64_run_stays_float64_through_resume_encode_and_analyze(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--dtype", "float64", *TINY]) == 0
    assert torch.get_default_dtype() == torch.float32  # put back
    state = checkpoint.load(out / "checkpoint.h5")
    assert state.config["dtype"] == "float64"
    assert all(v.dtype == torch.float64 for v in state.model_state.values()
               if v.is_floating_point())
    assert main(["train", "--out", str(out), "--resume", "--dtype", "float32"]) == 2
    assert "trains in float64" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    model, config, state = load_run(out)
    assert state.progress["epoch"] == 2 and config.dtype == "float64"  # recorded
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert main(["encode", str(out), "--quiet"]) == 0
    with h5py.File(out / "codes_test.h5") as f:
        assert f["z"].dtype == "float64"
    assert main(["analyze", str(out), "--images", "4", "--chains", "2", "--draws", "4",
                 "--warmup", "2", "--quiet"]) == 0
    assert az.from_netcdf(out / "analysis" / "idata.nc").posterior["z"].dtype == "float64"
    assert torch.get_default_dtype() == torch.float32


def test_a_float32_run_and_the_option_checked(tmp_path):
    assert TrainConfig().dtype is None  # torch's default dtype when training starts
    with pytest.raises(ConfigError, match="dtype must be float32 or float64, got 'float16'"):
        TrainConfig.from_dict({"dtype": "float16"})
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", *TINY]) == 0
    model, config, state = load_run(tmp_path / "r")
    assert config.dtype is None and run_dtype(state) == "float32" and all(p.dtype == torch.float32
                                             for p in model.parameters())


def test_a_float64_checkpoint_of_before_the_option_loads_as_float64(tmp_path, float64):
    from pyro_sparsegen import SparseGenerator
    from pyro_sparsegen.networks import MLPGenerator

    model = SparseGenerator(MLPGenerator(3, (1, 4, 4), hidden=(5,)))
    config = TrainConfig().to_dict()
    del config["dtype"]  # as written before the option
    checkpoint.save(tmp_path / "checkpoint.h5", model=model, config=config)
    torch.set_default_dtype(torch.float32)
    loaded, config, state = load_run(tmp_path)
    assert "dtype" not in state.config and run_dtype(state) == "float64"
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].dtype == torch.float64
        assert torch.equal(loaded.state_dict()[key], value), key


def test_without_the_option_a_run_trains_in_torchs_default_dtype_and_records_it(tmp_path,
                                                                                  float64):
    from test_training import run, tiny_config

    config = tiny_config(optim__epochs=1)
    assert config.dtype is None
    result = run(config, tmp_path / "run", figures=False)
    assert all(p.dtype == torch.float64 for p in result.model.parameters())
    state = checkpoint.load(tmp_path / "run" / "checkpoint.h5")
    assert state.config["dtype"] is None and run_dtype(state) == "float64"  # the weights tell
    torch.set_default_dtype(torch.float32)  # a resume under another default is refused
    with pytest.raises(ConfigError, match="the checkpoint's run trains in float64; this run "
                                          "would train in float32"):
        run(tiny_config(optim__epochs=2), tmp_path / "run", figures=False, resume=True)
