"""Two CPU processes (gloo): DistributedDataParallel keeps the ranks' weights identical."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from pyro_sparsegen.training import load_run


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    import torch.distributed as dist

    sys.path.insert(0, os.path.dirname(__file__))
    from test_training import tiny_config, tiny_data

    from pyro_sparsegen.training import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = tiny_data()
        result = train(tiny_config(), out, train_data=data.subset(range(32)),
                       test_data=data.subset(range(32, 48)), progress=False, figures=False)
        torch.save(result.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_two_processes_keep_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    model, _, state = load_run(tmp_path)
    assert state.progress["iteration"] == 2  # 32 images, 2 ranks, batches of 16: 1 a rank-epoch
    for key, value in model.state_dict().items():
        assert torch.equal(value, a[key])


def test_torchrun_cli(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={_free_port()}", "-m", "pyro_sparsegen", "train", "--out", str(out),
         "--data", "digits", "--epochs", "1", "--latent-dim", "4", "--num-steps", "3",
         "--eval-images", "20", "--batch-size", "300", "--quiet", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model, config, state = load_run(out)
    assert state.progress["epoch"] == 1 and model.latent_dim == 4
