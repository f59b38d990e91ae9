"""One run folder, one writer: a second training into a folder that a live process is writing
is refused in one line naming that process; the lock a killed process left is taken over (one
line says so); readers never see a half-written checkpoint."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from pyro_sparsegen import checkpoint
from pyro_sparsegen.cli import main
from pyro_sparsegen.files import LOCK, FolderLock, FolderLockedError

TINY = ["--data", "digits", "--latent-dim", "4", "--num-steps", "3", "--eval-images", "20",
        "--batch-size", "300", "--quiet", "--device", "cpu"]


def _wait_for(predicate, proc, timeout=300):
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the process ended early: {proc.communicate()}")
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.05)


def test_a_live_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pyro_sparsegen", "train", "--out", str(out),
                             "--epochs", "200", *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / "checkpoint.h5").exists(), proc)
        assert (out / LOCK).read_text().split()[0] == str(proc.pid)
        for argv in (["train", "--out", str(out), *TINY],  # a fresh run into it
                     ["train", "--out", str(out), "--resume", "--quiet"]):  # or a resume
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"process {proc.pid} on " in err, err
            assert "is writing this run folder" in err
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    epoch = checkpoint.load(out / "checkpoint.h5").progress["epoch"]
    assert main(["train", "--out", str(out), "--resume", "--epochs", str(epoch + 1),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    took_over = [line for line in err.splitlines() if "took over the lock" in line]
    assert len(took_over) == 1 and f"process {proc.pid} " in took_over[0], err
    assert "no longer running" in took_over[0]
    assert checkpoint.load(out / "checkpoint.h5").progress["epoch"] == epoch + 1
    assert (out / LOCK).read_text() == ""  # released: nothing left to take over


HOLD = textwrap.dedent("""
    import sys, time
    from pyro_sparsegen.files import FolderLock
    FolderLock.acquire(sys.argv[1])
    print("held", flush=True)
    time.sleep(120)
""")


def test_the_lock_is_one_process_s_and_re_entrant_within_it(tmp_path, capsys):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        with pytest.raises(FolderLockedError, match=rf"process {proc.pid} on .* is writing"):
            FolderLock.acquire(tmp_path)
    finally:
        proc.kill()
        proc.communicate()
    FolderLock.acquire(tmp_path).release()  # a killed holder's lock: taken over, said once
    assert capsys.readouterr().err.count(f"took over the lock left by process {proc.pid} ") == 1
    lock = FolderLock.acquire(tmp_path)  # after a clean release: nothing to take over
    assert "took over" not in capsys.readouterr().err
    again = FolderLock.acquire(tmp_path)  # the CLI's, then the training loop's
    assert again is lock and FolderLock.holds(tmp_path)
    again.release()
    assert FolderLock.holds(tmp_path)
    lock.release()
    assert not FolderLock.holds(tmp_path)


# Saves a small model's checkpoint again and again, its weights all equal to the epoch number.
WRITER = textwrap.dedent("""
    import sys, torch
    from pyro_sparsegen import SparseGenerator, checkpoint
    from pyro_sparsegen.networks import MLPGenerator

    model = SparseGenerator(MLPGenerator(16, (1, 16, 16), hidden=(128,)))
    for epoch in range(1, int(sys.argv[2]) + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(epoch)
        checkpoint.save(sys.argv[1], model=model, config={}, progress={"epoch": epoch})
""")


def test_readers_never_see_a_half_written_checkpoint(tmp_path):
    path, saves = tmp_path / "checkpoint.h5", 25
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(saves)],
                            stderr=subprocess.PIPE, text=True)
    seen = set()
    try:
        while proc.poll() is None:
            if not path.exists():
                continue
            state = checkpoint.load(path)  # never a damaged or half-written file
            epoch = state.progress["epoch"]
            assert state.verified
            for key, value in state.model_state.items():
                if value.is_floating_point() and value.numel():
                    assert torch.all(value == epoch), (epoch, key)
            seen.add(epoch)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert checkpoint.load(path).progress["epoch"] == saves and len(seen) > 1, seen
