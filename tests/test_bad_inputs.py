"""The catalogue of bad inputs: each gives a clear error naming the problem (the CLI: one line on
stderr, a non-zero exit, no traceback) and writes or damages nothing."""

import hashlib
import json
import math
import os

import h5py
import numpy as np
import pytest
import torch

from pyro_sparsegen import ShortRunLangevin, SparseGenerator, SpikeAndSlab, schedules
from pyro_sparsegen.files import seal
from pyro_sparsegen.cli import main
from pyro_sparsegen.data import DataError, load_data
from pyro_sparsegen.networks import MLPGenerator

TINY = ["--data", "digits", "--epochs", "1", "--latent-dim", "4", "--num-steps", "3",
        "--eval-images", "20", "--batch-size", "300", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


def digest(folder):
    """A hash of every file under ``folder`` (names and bytes)."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(path.encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def cli_error(capsys, argv, *, match):
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert match in err, err
    return err


def write_npz(path, images, labels=None):
    arrays = {"images": images}
    if labels is not None:
        arrays["labels"] = labels
    np.savez(path, **arrays)
    return path


# -- data -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case,images,labels,match", [
    ("nan", np.full((10, 8, 8), np.nan, np.float32), None, "NaN"),
    ("inf", np.full((10, 8, 8), np.inf, np.float32), None, "inf"),
    ("rank", np.zeros((10, 64), np.float32), None, "dimensions"),
    ("empty", np.zeros((0, 8, 8), np.float32), None, "empty"),
    ("labels", np.zeros((10, 8, 8), np.float32), np.zeros(7, np.int64), "labels"),
    ("range", np.full((10, 8, 8), 300.0, np.float32), None, "outside"),
    ("negative", np.full((10, 8, 8), -1, np.int16), None, "outside"),
])
def test_bad_data_cli_and_api(tmp_path, capsys, case, images, labels, match):
    path = write_npz(tmp_path / f"{case}.npz", images, labels)
    with pytest.raises(DataError) as info:
        load_data(f"npz:{path}", "all")
    assert f"{case}.npz" in str(info.value)
    out = tmp_path / "run"
    err = cli_error(capsys, ["train", "--out", str(out), "--data", f"npz:{path}", "--quiet"],
                    match=f"{case}.npz")
    assert match.lower() in err.lower()
    assert not (out / "checkpoint.h5").exists()


def test_unknown_data_spec(tmp_path, capsys):
    cli_error(capsys, ["train", "--out", str(tmp_path / "r"), "--data", "nosuch:thing",
                       "--quiet"], match="nosuch:thing")


def test_missing_data_file(tmp_path, capsys):
    cli_error(capsys, ["train", "--out", str(tmp_path / "r"), "--data",
                       f"npz:{tmp_path / 'missing.npz'}", "--quiet"], match="missing.npz")


def test_wrong_image_size_for_the_network(run_dir, capsys, tmp_path):
    before = digest(run_dir)
    path = write_npz(tmp_path / "big.npz", np.zeros((10, 28, 28), np.float32))
    cli_error(capsys, ["encode", str(run_dir), "--data", f"npz:{path}", "--split", "all"],
              match="(1, 28, 28)")
    assert digest(run_dir) == before


# -- the prior, the schedule and the kernel ------------------------------------------------------
@pytest.mark.parametrize("args,name", [
    ((1.5, 1.0, 0.1), "slab_weight"), ((-0.1, 1.0, 0.1), "slab_weight"),
    ((0.5, 0.0, 0.1), "slab_scale"), ((0.5, 1.0, -1.0), "spike_scale"),
    ((0.5, math.inf, 0.1), "slab_scale"), ((0.5, 1.0, math.nan), "spike_scale"),
    ((math.nan, 1.0, 0.1), "slab_weight"),
])
def test_bad_prior_parameters(args, name):
    with pytest.raises(ValueError, match=name):
        SpikeAndSlab(*args)


def test_bad_prior_tensor_parameters():
    with pytest.raises(ValueError, match="slab_weight"):
        SpikeAndSlab(torch.tensor([0.5, 2.0]), 1.0, 0.1, validate_args=True)


def test_schedule_end_before_start():
    with pytest.raises(ValueError, match="before its start"):
        schedules.Curve("linear", 1.0, 0.1, start=10, stop=5)
    with pytest.raises(ValueError, match="slab_weight"):
        schedules.Schedule(slab_weight=schedules.Curve("linear", 1.0, 1.5, 0, 10))


@pytest.mark.parametrize("kwargs,match", [
    ({"step_size": 0.0}, "step_size"), ({"step_size": -1.0}, "step_size"),
    ({"step_size": math.inf}, "step_size"), ({"num_steps": 0}, "num_steps"),
    ({"num_steps": -3}, "num_steps"), ({"init": "ones"}, "init"),
    ({"prior_step": "implicit"}, "prior_step"), ({"metropolis": True, "noise": False}, "noise"),
])
def test_bad_kernel_arguments(kwargs, match):
    model = SparseGenerator(MLPGenerator(3, (1, 8, 8), hidden=(4,)))
    with pytest.raises(ValueError, match=match):
        ShortRunLangevin(model, **kwargs)


def test_bad_model_input():
    model = SparseGenerator(MLPGenerator(3, (1, 8, 8), hidden=(4,)))
    with pytest.raises(ValueError, match=r"\[images, 1, 8, 8\]"):
        ShortRunLangevin(model).infer(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="noise_scale"):
        SparseGenerator(MLPGenerator(3, (1, 8, 8)), noise_scale=0.0)


# -- CLI flags ------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value,match", [
    ("--epochs", "0", "epochs"), ("--epochs", "-2", "epochs"),
    ("--batch-size", "0", "batch_size"), ("--step-size", "0", "step_size"),
    ("--step-size", "-0.1", "step_size"), ("--num-steps", "0", "num_steps"),
    ("--latent-dim", "0", "latent_dim"), ("--lr", "nan", "lr"),
    ("--schedule", "fancy", "preset"), ("--network", "resnet", "network"),
    ("--final-slab-weight", "2", "final_slab_weight"), ("--epochs", "two", "epochs"),
    ("--dense-fraction", "0.7", "dense_fraction"), ("--slab-scale", "0", "slab_scale"),
])
def test_bad_flag_values(tmp_path, capsys, flag, value, match):
    out = tmp_path / "run"
    cli_error(capsys, ["train", "--out", str(out), flag, value, "--quiet"], match=match)
    assert not out.exists()


def test_device_cuda_without_gpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cli_error(capsys, ["train", "--out", str(tmp_path / "r"), *TINY[:-2], "--device", "cuda"],
              match="no CUDA device")


def test_config_file_with_unknown_keys(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"optim": {"epochs": 1, "learning_rate": 0.1}}))
    cli_error(capsys, ["train", "--out", str(tmp_path / "r"), "--config", str(config)],
              match="learning_rate")
    config.write_text(json.dumps({"optimizer": {}}))
    cli_error(capsys, ["train", "--out", str(tmp_path / "r"), "--config", str(config)],
              match="optimizer")
    config.write_text("{not json")
    cli_error(capsys, ["train", "--out", str(tmp_path / "r"), "--config", str(config)],
              match="not valid JSON")


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cli_error(capsys, ["train", "--out", str(blocker / "run"), *TINY], match="file")
    cli_error(capsys, ["train", "--out", "/proc/pyro_sparsegen_run", *TINY],
              match="pyro_sparsegen_run")


def test_a_bad_prior_kind_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    err = cli_error(capsys, ["train", "--out", str(out), "--prior", "learned_scale", *TINY],
                    match="invalid choice: 'learned_scale'")
    assert "learned-scale" in err  # the choices are named
    config = tmp_path / "c.toml"
    config.write_text('[prior]\nkind = "scaled"\n')
    cli_error(capsys, ["train", "--out", str(out), "--config", str(config), *TINY],
              match="prior.kind must be one of ('annealed', 'learned', 'learned-scale', "
                    "'hierarchical'), got 'scaled'")
    assert not out.exists()


def test_existing_run_needs_resume(run_dir, capsys):
    before = digest(run_dir)
    cli_error(capsys, ["train", "--out", str(run_dir), *TINY], match="--resume")
    assert digest(run_dir) == before


# -- runs and checkpoints -------------------------------------------------------------------------
def test_missing_run_folder(tmp_path, capsys):
    for command in ("encode", "sample", "reconstruct", "analyze"):
        cli_error(capsys, [command, str(tmp_path / "nope")], match="no such run folder")
    cli_error(capsys, ["train", "--out", str(tmp_path / "nope"), "--resume"],
              match="no such run folder")


def test_latent_size_mismatch_on_resume(run_dir, capsys):
    before = digest(run_dir)
    cli_error(capsys, ["train", "--out", str(run_dir), "--resume", "--latent-dim", "7",
                       "--quiet"], match="latent size 4")
    cli_error(capsys, ["train", "--out", str(run_dir), "--resume", "--network", "conv",
                       "--quiet"], match="mlp network")
    assert digest(run_dir) == before


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_ours", "wrong_class"])
def test_damaged_checkpoint(run_dir, tmp_path, capsys, damage):
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (run_dir / "checkpoint.h5").read_bytes()
    target = broken / "checkpoint.h5"
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
        match = "damaged"
    elif damage == "garbage":
        target.write_bytes(os.urandom(4096))
        match = "damaged"
    elif damage == "not_ours":
        with h5py.File(target, "w") as f:
            f["images"] = np.zeros((3, 8, 8))
        match = "not a pyro_sparsegen checkpoint"
    else:
        target.write_bytes(data)
        with h5py.File(target, "a") as f:
            f.attrs["model_class"] = "pyro_sparsegen.networks:MLPGenerator"
        seal(target, replace=True)  # a consistent file that records another class
        match = "MLPGenerator"
    for command in ("sample", "encode"):
        cli_error(capsys, [command, str(broken)], match=match)


def test_bad_command_values(run_dir, capsys):
    before = digest(run_dir)
    cli_error(capsys, ["sample", str(run_dir), "--num", "0"], match="--num")
    cli_error(capsys, ["reconstruct", str(run_dir), "--noise", "-1"], match="--noise")
    cli_error(capsys, ["analyze", str(run_dir), "--chains", "0"], match="--chains")
    cli_error(capsys, ["encode", str(run_dir), "--split", "valid"], match="split")
    cli_error(capsys, ["sample", str(run_dir), "--out", "/no/such/dir/x.png"], match="/no/such")
    assert digest(run_dir) == before


def test_diverging_langevin_stops_training(run_dir, tmp_path, capsys):
    out = tmp_path / "run"
    cli_error(capsys, ["train", "--out", str(out), *TINY, "--step-size", "1000",
                       "--prior-step", "explicit"],
              match="diverged")
