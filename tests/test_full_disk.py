"""A full disk (ENOSPC) or a quota (EDQUOT) at every writer, injected at the writer's own seam
(the fsync of its temporary, the rename over the target, the plain write of the bytes): the
previous file intact, no temporary left, one ``OSError`` naming the file and the errno; from
the command line one line and a non-zero exit; training stops at its last good checkpoint and
resumes from it. (docs/checkpoints.md says how it was checked for real on a 2 MB tmpfs.)"""

import builtins
import errno
import os

import numpy as np
import pytest
import torch

from pyro_sparsegen import SparseGenerator, checkpoint, files, plots, save_codes
from pyro_sparsegen.cli import main
from pyro_sparsegen.monitor import rewrite_csv
from pyro_sparsegen.networks import MLPGenerator

TINY = ["--data", "digits", "--latent-dim", "4", "--num-steps", "3", "--eval-images", "20",
        "--batch-size", "300", "--quiet", "--device", "cpu"]


def _model():
    return SparseGenerator(MLPGenerator(3, (1, 4, 4), hidden=(5,)))


# name -> writer(path, version): the package's writers, each through its own code
WRITERS = {
    "checkpoint.h5": lambda path, v: checkpoint.save(path, model=_model(), config={"v": v}),
    "codes_test.h5": lambda path, v: save_codes(path, {"z": np.full((4, 3), v, np.float32)}),
    "metrics.csv": lambda path, v: rewrite_csv(str(path), [{"epoch": v}]),
    "samples.png": lambda path, v: plots.plot_image_grid([torch.full((2, 1, 4, 4), v / 9.0)],
                                                         str(path)),
    "run_all.md": lambda path, v: files.write_text(path, f"# results {v}\n"),  # run_all's
}


def _failing(monkeypatch, seam, code):
    """Make ``seam`` raise ``OSError(code)`` for the package's temporaries only."""
    def fail():
        raise OSError(code, os.strerror(code))

    if seam == "fsync":
        fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: fail() if ".tmp-" in os.readlink(
            f"/proc/self/fd/{fd}") else fsync(fd))
    elif seam == "replace":
        replace = os.replace
        monkeypatch.setattr(os, "replace", lambda a, b: fail() if ".tmp-" in os.fspath(a)
                            else replace(a, b))
    else:  # the bytes themselves: the first write into a temporary opened by Python
        real_open = builtins.open

        class Full:
            def __init__(self, handle):
                self.handle = handle

            def write(self, data):
                fail()

            def __getattr__(self, name):
                return getattr(self.handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

        def opening(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if ".tmp-" in os.fspath(file) and ("w" in mode or "a" in mode):
                return Full(handle)
            return handle

        monkeypatch.setattr(builtins, "open", opening)


# matplotlib writes a figure's bytes through its own file handle: its seams are fsync, replace
SEAMS = [(name, seam) for name in WRITERS for seam in ("fsync", "replace", "write")
         if (name, seam) != ("samples.png", "write")]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("name, seam", SEAMS)
def test_a_full_disk_leaves_the_previous_file_and_names_the_file(name, seam, code, tmp_path,
                                                                 monkeypatch):
    path = tmp_path / name
    WRITERS[name](path, 1)
    before = path.read_bytes()
    _failing(monkeypatch, seam, code)
    with pytest.raises(OSError) as info:
        WRITERS[name](path, 2)
    monkeypatch.undo()
    assert info.value.errno == code and info.value.filename == str(path), info.value
    assert str(info.value) == f"[Errno {code}] {os.strerror(code)}: '{path}'"
    assert path.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_libhdf5s_own_error_text_gives_its_errno():
    error = OSError("Unable to synchronously write ... (file write failed: ..., errno = 28, "
                    "error message = 'No space left on device', ...)")
    named = files.naming(error, "run/checkpoint.h5")
    assert named.errno == errno.ENOSPC and named.filename == "run/checkpoint.h5"
    other = files.naming(OSError("no errno here"), "x.nc")
    assert other.errno == errno.EIO and "no errno here" in str(other)


def test_training_stops_at_its_last_good_checkpoint_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    replace, saves = os.replace, []

    def full_from_the_second_checkpoint(a, b):
        if os.path.basename(b) == "checkpoint.h5":
            saves.append(b)
            if len(saves) >= 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return replace(a, b)

    monkeypatch.setattr(os, "replace", full_from_the_second_checkpoint)
    assert main(["train", "--out", str(out), "--epochs", "3", *TINY]) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err == (f"pyro-sparsegen: error: [Errno {errno.ENOSPC}] No space left on device: "
                   f"'{out / 'checkpoint.h5'}'\n")
    assert checkpoint.load(out / "checkpoint.h5").progress["epoch"] == 1
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    state = checkpoint.load(out / "checkpoint.h5")
    assert state.progress["epoch"] == 3 and len(state.metrics) == 3
    # the commands that write into the run folder: one line each, the file named
    codes = out / "codes_test.h5"
    for argv, target in ((["encode", str(out), "--quiet"], codes),
                         (["sample", str(out), "--num", "4"], out / "samples_cli.png")):
        monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
        assert main(argv) == 1
        monkeypatch.undo()
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"No space left on device: '{target}'" in err, err
        assert not target.exists()
