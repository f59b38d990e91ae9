"""Two CPU processes (gloo), spawned once for the module: DistributedDataParallel against one
process with the combined batch, per-rank Langevin noise and its resume, resuming with
another world size, and a fault on one rank stopping both."""

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from pyro_sparsegen.config import ConfigError
from pyro_sparsegen.builders import load_run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WORLD = 2
BATCH = 8  # per rank: 32 images are 2 batches a rank-epoch, as 1 process at batch 16
# a rank left waiting in a collective fails after this; far above what a fault takes to stop
# every rank (seconds, even on a loaded machine), so that the two cannot be confused
COLLECTIVE_TIMEOUT_S = 120
DEADLINE_S = 480  # the whole spawn, so that a hang cannot stall the suite


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def noisy(config):
    """Langevin noise on, explicit step, chains from prior draws: every stream matters."""
    config.langevin.noise, config.langevin.prior_step = True, "explicit"
    config.langevin.init = "prior"
    return config


@contextlib.contextmanager
def sgd_instead_of_adam():
    """Plain SGD: its step is proportional to the gradient, so it sees how the loss is
    normalised (Adam's step does not change when the gradient is scaled)."""
    import pyro

    from pyro_sparsegen import builders

    make_optim = builders.make_optim
    builders.make_optim = lambda config, device: pyro.optim.SGD({"lr": config.optim.lr})
    try:
        yield
    finally:
        builders.make_optim = make_optim


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# -- what each rank runs ----------------------------------------------------------------------
def _equivalence(rank, out):
    from test_training import run, tiny_config

    return weights(run(tiny_config(optim__batch_size=BATCH), out, figures=False).model)


def _equivalence_sgd(rank, out):
    from test_training import LaplaceSlab, run, tiny_config

    import pyro

    pyro.clear_param_store()
    with sgd_instead_of_adam():
        model = run(tiny_config(optim__batch_size=BATCH), out, figures=False,
                    model_class=LaplaceSlab).model
    return weights(model)


def _noise_streams(rank, out):
    """A noisy run straight through, and one stopped after epoch 1 and resumed."""
    from test_training import run, tiny_config

    from pyro_sparsegen.infer import ShortRunLangevin

    first_call = []
    call = ShortRunLangevin.infer

    def recording(self, *args, **kwargs):
        if not first_call:
            first_call.append(torch.get_rng_state())
        return call(self, *args, **kwargs)

    ShortRunLangevin.infer = recording
    try:
        straight = run(noisy(tiny_config(optim__batch_size=BATCH)), os.path.join(out, "a"),
                       figures=False).model
    finally:
        ShortRunLangevin.infer = call
    run(noisy(tiny_config(optim__batch_size=BATCH)), os.path.join(out, "b"), figures=False,
        stop_after=1)
    torch.manual_seed(12345)  # as a fresh process would start
    resumed = run(noisy(tiny_config(optim__batch_size=BATCH)), os.path.join(out, "b"),
                  figures=False, resume=True).model
    return {"straight": weights(straight), "resumed": weights(resumed),
            "first_rng": first_call[0]}


@contextlib.contextmanager
def _fault(kind, here, iteration):
    """Make this rank (``here``) fail at ``iteration``: a non-finite loss, a divergence, or a
    non-finite held-out MSE when the epoch ending there is evaluated."""
    from pyro_sparsegen import monitor
    from pyro_sparsegen.abp import ABP
    from pyro_sparsegen.infer import ShortRunLangevin

    if not here:
        yield
        return
    if kind == "evaluation":
        original = monitor.evaluate

        def faulty(model, *args, **kwargs):
            figures = original(model, *args, **kwargs)
            if model.iteration == iteration:
                figures["test_mse"] = float("nan")
            return figures

        monitor.evaluate = faulty
        try:
            yield
        finally:
            monitor.evaluate = original
        return
    if kind == "loss":
        original = ABP._loss

        def faulty(self, *args, **kwargs):
            loss, params, reconstruction = original(self, *args, **kwargs)
            if self.iteration == iteration:
                loss = loss * float("nan")
            return loss, params, reconstruction

        ABP._loss = faulty
        try:
            yield
        finally:
            ABP._loss = original
        return
    infer = ShortRunLangevin.infer

    def diverging(self, *args, **kwargs):
        out = infer(self, *args, **kwargs)
        if self.model.training and self.model.iteration == iteration:
            runs = self.last_run
            self.last_run = runs._replace(divergences=torch.full_like(
                runs.divergences, self.num_steps))
        return out

    ShortRunLangevin.infer = diverging
    try:
        yield
    finally:
        ShortRunLangevin.infer = infer


def _faults(rank, out):
    """Resume a 1-epoch run; a fault on one rank at iteration 3 (mid-epoch 2), or in the
    evaluation after epoch 2 (iteration 4)."""
    from test_training import run, tiny_config

    config = tiny_config(optim__batch_size=BATCH)
    run(config, out, figures=False, stop_after=1)
    before = digest(os.path.join(out, "checkpoint.h5"))
    outcomes = {}
    for kind, bad_rank, iteration in FAULTS:
        start = time.monotonic()
        try:
            with _fault(kind, rank == bad_rank, iteration):
                run(config, out, figures=False, resume=True)
            outcome = ("finished", "")
        except Exception as e:  # noqa: BLE001 - reported to the parent
            outcome = (type(e).__name__, str(e))
        outcomes[kind] = (*outcome, time.monotonic() - start)
    return {"outcomes": outcomes,
            "unchanged": before == digest(os.path.join(out, "checkpoint.h5"))}


FAULTS = [("loss", 1, 3), ("divergence", 0, 3), ("evaluation", 1, 4)]
SCENARIOS = {"equivalence": _equivalence, "equivalence_sgd": _equivalence_sgd,
             "noise_streams": _noise_streams, "faults": _faults}  # faults last


def _worker(rank, world, port, out):
    import torch.distributed as dist

    sys.path.insert(0, os.path.dirname(__file__))
    torch.set_default_dtype(torch.float64)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    from pyro_sparsegen.files import FolderLock

    acquire, locked = FolderLock.acquire.__func__, []

    def acquire_and_count(cls, folder, *args, **kwargs):  # which rank takes the folder's lock
        locked.append(os.path.relpath(folder, out))
        return acquire(cls, folder, *args, **kwargs)

    FolderLock.acquire = classmethod(acquire_and_count)
    try:
        for name, scenario in SCENARIOS.items():
            result = scenario(rank, os.path.join(out, name))
            torch.save(result, os.path.join(out, f"{name}.rank{rank}.pt"))
        torch.save(locked, os.path.join(out, f"locked.rank{rank}.pt"))
    finally:
        FolderLock.acquire = classmethod(acquire)
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """The folder the two ranks wrote, and a loader of their results."""
    out = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(_worker, args=(WORLD, _free_port(), str(out)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} training processes did not finish in {DEADLINE_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()

    def results(name):
        return [torch.load(out / f"{name}.rank{r}.pt", weights_only=False) for r in range(WORLD)]

    return out, results


def single(config, out, **kwargs):
    import pyro
    from test_training import run

    pyro.clear_param_store()  # a PyroParam of an earlier test's variant model must not leak in
    return weights(run(config, out, figures=False, **kwargs).model)


# -- the tests --------------------------------------------------------------------------------
def test_ranks_keep_identical_weights_and_rank_0_writes_them(ddp):
    out, results = ddp
    a, b = results("equivalence")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    model, _, state = load_run(out / "equivalence")
    assert state.progress["iteration"] == 4 and state.progress["world_size"] == WORLD
    for key, value in model.state_dict().items():
        assert torch.equal(value, a[key].to(value.dtype)), key


@pytest.mark.parametrize("scenario", ["equivalence", "equivalence_sgd"])
def test_two_ranks_equal_one_process_with_the_combined_batch(ddp, tmp_path, float64, scenario,
                                                             monkeypatch):
    from test_training import LaplaceSlab, tiny_config

    _, results = ddp
    config = tiny_config(optim__batch_size=WORLD * BATCH)
    if scenario == "equivalence_sgd":  # a learned prior parameter too: averaged by ABP
        with sgd_instead_of_adam():
            expected = single(config, tmp_path, model_class=LaplaceSlab)
    else:
        expected = single(config, tmp_path)
    ranks = results(scenario)
    for key, value in expected.items():
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-9, atol=1e-12)


def test_rank_0_holds_the_run_folders_lock_for_the_job(ddp):
    _, results = ddp
    rank_0, rank_1 = results("locked")
    assert rank_1 == [] and "equivalence" in rank_0 and len(rank_0) >= len(SCENARIOS), rank_0


def test_each_rank_draws_its_own_noise(ddp):
    _, results = ddp
    a, b = results("noise_streams")
    assert not torch.equal(a["first_rng"], b["first_rng"])


def test_noisy_resume_restores_every_ranks_streams(ddp):
    _, results = ddp
    for rank, result in enumerate(results("noise_streams")):
        for key, value in result["straight"].items():
            assert torch.equal(value, result["resumed"][key]), (rank, key)


def test_resume_with_another_world_size_is_refused(ddp, tmp_path):
    from test_training import tiny_config

    out, _ = ddp
    with pytest.raises(ConfigError, match=r"^the checkpoint was written by 2 process\(es\); "
                                          r"resume it with as many \(this run has 1\)$"):
        single(noisy(tiny_config(optim__batch_size=BATCH)), out / "noise_streams" / "b",
               resume=True)


@pytest.mark.parametrize("kind, bad_rank, iteration", FAULTS)
def test_a_fault_on_one_rank_stops_every_rank(ddp, kind, bad_rank, iteration):
    _, results = ddp
    outcomes = [r["outcomes"][kind] for r in results("faults")]
    # a step's checks are read at the end of its chunk (here the epoch: iterations 2 and 3)
    expected = {"loss": "a non-finite loss, code or gradient before iteration 4; rolled back "
                        "to iteration 2",
                "divergence": "diverged in 40 of 80 chain-steps before iteration 4",
                "evaluation": "evaluation gave a non-finite test_mse after epoch 2"}[kind]
    for rank, (error, message, seconds) in enumerate(outcomes):
        assert error == "TrainingError", (rank, error, message)
        assert message.startswith(f"rank {bad_rank}: ") and expected in message, message
        assert "\n" not in message
        assert seconds < COLLECTIVE_TIMEOUT_S / 2, (rank, seconds)  # agreed, not timed out
    assert all(r["unchanged"] for r in results("faults"))  # the checkpoint is untouched


# 64 training images of 8 x 8: 2 ranks x 8 and 1 process x 16 both take four steps an epoch
TORCHRUN = ["--epochs", "1", "--latent-dim", "4", "--num-steps", "3", "--eval-images", "16",
            "--quiet", "--device", "cpu", "--dtype", "float64"]


@pytest.fixture(scope="module")
def torchrun_float64(tmp_path_factory):
    """A float64 run of 2 ranks x 8 images a step through the command line under torchrun,
    and the folder's data set (``npz:``, 64 training and 16 test images)."""
    folder = tmp_path_factory.mktemp("torchrun")
    rng = np.random.default_rng(0)
    data = folder / "images.npz"
    np.savez(data, images=rng.integers(0, 256, (64, 1, 8, 8), dtype=np.uint8),
             labels=np.arange(64) % 10,
             test_images=rng.integers(0, 256, (16, 1, 8, 8), dtype=np.uint8),
             test_labels=np.arange(16) % 10)
    out = folder / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={_free_port()}", "-m", "pyro_sparsegen", "train", "--out", str(out),
         "--data", f"npz:{data}", "--batch-size", "8", *TORCHRUN],
        capture_output=True, text=True, env=env, timeout=600)
    return proc, out, data


def test_torchrun_cli(torchrun_float64):
    proc, out, _ = torchrun_float64
    assert proc.returncode == 0, proc.stderr[-2000:]
    model, config, state = load_run(out)
    assert state.progress["epoch"] == 1 and model.latent_dim == 4


def test_two_ranks_equal_one_process_in_float64_through_the_command_line(torchrun_float64,
                                                                         tmp_path):
    from pyro_sparsegen.cli import main

    proc, out, data = torchrun_float64
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main(["train", "--out", str(tmp_path / "one"), "--data", f"npz:{data}",
                 "--batch-size", "16", *TORCHRUN]) == 0
    ranks, _, state = load_run(out)
    one, config, one_state = load_run(tmp_path / "one")
    assert config.dtype == "float64" and state.config["dtype"] == "float64"
    assert state.progress["iteration"] == one_state.progress["iteration"] == 4
    assert state.progress["world_size"] == 2
    for key, value in one.state_dict().items():
        assert value.dtype == torch.float64, key
        torch.testing.assert_close(ranks.state_dict()[key], value, rtol=0, atol=1e-9)
