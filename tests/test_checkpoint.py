"""Checkpoint files: modes, atomic rewrites, temporaries of other writers, and which model
classes loading may import."""

import os
import stat
import subprocess
import sys

import h5py
import pytest
import torch
from test_training import run, tiny_config

from pyro_sparsegen import SparseGenerator, checkpoint, files, save_codes
from pyro_sparsegen.checkpoint import CheckpointError
from pyro_sparsegen.cli import main
from pyro_sparsegen.networks import MLPGenerator
from pyro_sparsegen.builders import load_run
from pyro_sparsegen.monitor import rewrite_csv


@pytest.fixture
def umask():
    """Set the process umask for one test."""
    old = os.umask(0o022)

    def set_to(mask):
        os.umask(mask)

    yield set_to
    os.umask(old)


def tiny_model(cls=SparseGenerator):
    return cls(MLPGenerator(3, (1, 4, 4), hidden=(5,)))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def temporary_of(pid, folder, suffix=".h5"):
    """A temporary named as :func:`checkpoint.atomic_file` names those of process ``pid``."""
    path = folder / f".tmp-{pid}-{files.host_tag()}-0123abcd{suffix}"
    path.write_bytes(b"half written")
    return path


# -- modes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_honour_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    model = tiny_model()
    checkpoint.save(tmp_path / "checkpoint.h5", model=model, config={})
    rewrite_csv(str(tmp_path / "metrics.csv"), [{"epoch": 1}])
    save_codes(tmp_path / "codes.h5", {"z": torch.zeros(2, 3).numpy()})
    for name in ("checkpoint.h5", "metrics.csv", "codes.h5"):
        assert mode(tmp_path / name) == expected, name


def test_a_run_folder_honours_the_umask(tmp_path, umask):
    umask(0o022)
    run(tiny_config(optim__epochs=1), tmp_path, figures=False)
    assert mode(tmp_path / "checkpoint.h5") == 0o644
    assert mode(tmp_path / "metrics.csv") == 0o644


# -- atomic rewrites --------------------------------------------------------------------------
def test_metrics_rewrite_failing_mid_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "metrics.csv")
    rewrite_csv(path, [{"epoch": 1, "mse": 0.5}])
    before = (tmp_path / "metrics.csv").read_text()
    # the second row has a column the header lacks: csv raises after writing the first
    with pytest.raises(ValueError):
        rewrite_csv(path, [{"epoch": 1, "mse": 0.25}, {"epoch": 2, "mse": 0.4, "bad": 1}])
    assert (tmp_path / "metrics.csv").read_text() == before
    assert os.listdir(tmp_path) == ["metrics.csv"]  # no temporary left behind


def test_rewritten_files_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced = set()
    fsync = os.fsync

    def recording_fsync(fd):
        synced.add(os.fstat(fd).st_ino)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    rewrite_csv(str(tmp_path / "metrics.csv"), [{"epoch": 1}])
    save_codes(tmp_path / "codes.h5", {"z": torch.zeros(2, 3).numpy()})
    checkpoint.save(tmp_path / "checkpoint.h5", model=tiny_model(), config={})
    for name in ("metrics.csv", "codes.h5", "checkpoint.h5"):
        assert os.stat(tmp_path / name).st_ino in synced, name


def test_temporaries_carry_the_writers_pid_and_suffix(tmp_path):
    seen = []
    with checkpoint.atomic_file(tmp_path / "metrics.csv") as tmp:
        seen.append(os.path.basename(tmp))
        with open(tmp, "w") as f:
            f.write("x")
    name = seen[0]
    assert name.startswith(f".tmp-{os.getpid()}-") and name.endswith(".csv")


# -- temporaries of other writers -------------------------------------------------------------
def test_train_keeps_a_live_writers_temporary_and_removes_a_dead_ones(tmp_path):
    tmp_path.joinpath("run").mkdir()
    folder = tmp_path / "run"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        alive_tmp = temporary_of(live.pid, folder)
        dead_tmp = temporary_of(dead.pid, folder)
        dead_csv = temporary_of(dead.pid, folder, ".csv")
        run(tiny_config(optim__epochs=1), folder, figures=False)
        assert alive_tmp.exists()  # a concurrent writer's file is never touched
        assert not dead_tmp.exists() and not dead_csv.exists()
    finally:
        live.kill()
        live.wait()


def test_codes_writer_removes_a_dead_writers_temporary(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = temporary_of(dead.pid, tmp_path)
    other = tmp_path / ".tmp-notours.h5"  # not a name atomic_file makes: left alone
    other.write_bytes(b"")
    save_codes(tmp_path / "codes.h5", {"z": torch.zeros(2, 3).numpy()})
    assert not stale.exists() and other.exists()


# -- which classes loading imports ------------------------------------------------------------
PLANTED = '''
import os
with open(os.environ["PLANTED_MARKER"], "a") as f:
    f.write("imported\\n")

from pyro_sparsegen import SparseGenerator


class Planted(SparseGenerator):
    pass
'''


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A run folder whose checkpoint records ``planted_mod:Planted``, a module on sys.path
    whose import writes a marker file."""
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "planted_mod.py").write_text(PLANTED)
    marker = tmp_path / "marker"
    monkeypatch.setenv("PLANTED_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(folder))
    # the recorded class, made here without importing the module
    stand_in = type("Planted", (SparseGenerator,), {"__module__": "planted_mod"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = tiny_model(stand_in)
    checkpoint.save(run_dir / "checkpoint.h5", model=model, config=tiny_config().to_dict())
    assert checkpoint.load(run_dir / "checkpoint.h5").model_class == "planted_mod:Planted"
    yield run_dir, marker
    sys.modules.pop("planted_mod", None)


def test_loading_a_foreign_class_needs_the_opt_in(planted, capsys, tmp_path):
    run_dir, marker = planted
    with pytest.raises(CheckpointError, match="planted_mod:Planted.*--trust-model") as info:
        load_run(run_dir)
    assert "trust_model=True" in str(info.value) and "\n" not in str(info.value)
    for command in (["sample", str(run_dir), "--out", str(tmp_path / "s.png")],
                    ["encode", str(run_dir), "--out", str(tmp_path / "c.h5")]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "planted_mod:Planted" in err and "--trust-model" in err
    assert not marker.exists() and "planted_mod" not in sys.modules  # nothing was imported


def test_trust_model_loads_a_foreign_class(planted, tmp_path):
    run_dir, marker = planted
    model, _, _ = load_run(run_dir, trust_model=True)
    assert type(model).__module__ == "planted_mod" and marker.read_text() == "imported\n"
    assert main(["sample", str(run_dir), "--num", "2", "--out", str(tmp_path / "s.png"),
                 "--trust-model"]) == 0


def test_passing_the_recorded_class_is_the_opt_in(planted):
    run_dir, marker = planted
    import planted_mod  # the user's own choice

    model, _, _ = load_run(run_dir, model_class=planted_mod.Planted)
    assert type(model) is planted_mod.Planted
    with pytest.raises(CheckpointError, match="records model class planted_mod:Planted, not "
                                              "pyro_sparsegen.model:SparseGenerator"):
        load_run(run_dir, model_class=SparseGenerator)


def test_own_classes_load_without_the_opt_in(tmp_path):
    checkpoint.save(tmp_path / "checkpoint.h5", model=tiny_model(), config=tiny_config().to_dict())
    model, _, _ = load_run(tmp_path)
    assert type(model) is SparseGenerator


def test_a_reexported_foreign_class_needs_the_opt_in(tmp_path):
    # an attribute path through a package module that leads outside the package
    checkpoint.save(tmp_path / "checkpoint.h5", model=tiny_model(), config=tiny_config().to_dict())
    with h5py.File(tmp_path / "checkpoint.h5", "r+") as f:
        f.attrs["model_class"] = "pyro_sparsegen.model:torch.nn.Module"
    files.seal(tmp_path / "checkpoint.h5", replace=True)  # a forger writes a matching checksum
    with pytest.raises(CheckpointError, match="outside pyro_sparsegen"):
        load_run(tmp_path)

