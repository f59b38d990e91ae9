"""Faults: SIGKILL while a checkpoint is being written, Ctrl-C mid-epoch."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from pyro_sparsegen import checkpoint
from pyro_sparsegen.cli import main
from pyro_sparsegen.builders import load_run

TINY = ["--data", "digits", "--latent-dim", "4", "--num-steps", "3", "--eval-images", "20",
        "--batch-size", "300", "--quiet", "--device", "cpu"]

# Runs the CLI with checkpoint.save slowed down from its second call on: the new file is
# complete but not yet moved into place when the parent kills the process.
SLOW_SAVE = textwrap.dedent("""
    import sys, time
    from pyro_sparsegen import checkpoint
    from pyro_sparsegen.cli import main

    original, calls = checkpoint.save, []

    def slow_save(*args, **kwargs):
        calls.append(1)
        if len(calls) >= 2:
            def hang(tmp):
                open(sys.argv[1], "w").write(tmp)
                time.sleep(60)
            kwargs["before_replace"] = hang
        return original(*args, **kwargs)

    checkpoint.save = slow_save
    sys.exit(main(sys.argv[2:]))
""")


def _wait_for(path, proc, timeout=300):
    start = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            pytest.fail(f"the process ended early: {proc.communicate()}")
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.05)


def test_sigkill_during_checkpoint_write_keeps_previous(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(marker), "train", "--out",
                             str(out), "--epochs", "3", *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marker, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    state = checkpoint.load(out / "checkpoint.h5")  # the epoch-1 checkpoint, intact
    assert state.progress["epoch"] == 1
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    model, config, state = load_run(out)
    assert state.progress["epoch"] == 3 and len(state.metrics) == 3
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]  # leftovers cleaned


def test_ctrl_c_saves_and_exits(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pyro_sparsegen", "train", "--out",
                             str(out), "--epochs", "200", *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / "checkpoint.h5", proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, 130)
    assert "interrupted: checkpoint saved" in err and "Traceback" not in err
    state = checkpoint.load(out / "checkpoint.h5")
    assert 1 <= state.progress["epoch"] < 200
    model, _, _ = load_run(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())
