"""One training epoch of the package against the same algorithm hand-written in PyTorch.

The authors' MNIST settings: ``MLPGenerator(100)`` (z -> 400 -> 784), batch 100, K = 30
Langevin steps of size 0.05 with the noise off (gradient ascent on log p(z | x), from zeros),
Adam(lr 1e-3, betas (0.5, 0.999)), a constant spike-and-slab prior (w = 0.1, spike 0.1, slab 1)
and the explicit prior step, on the 4,000 training images of ``mnist5k``. Both variants start
from the same weights and see the same batches; the package's time is the training part of
``train()`` (``metrics.csv``'s ``seconds``, which excludes the held-out evaluation).

Run: ``python benchmarks/train_epoch.py [--repeats 3]``; the last line is
``epoch_vs_handwritten_ratio=R`` (median over repeats, the variants interleaved).
"""

import argparse
import math
import statistics
import tempfile
import time

import torch

from pyro_sparsegen.config import TrainConfig
from pyro_sparsegen.data import load_data
from pyro_sparsegen.training import train

SETTINGS = {
    "network": {"latent_dim": 100, "hidden": [400]},
    "prior": {"preset": "constant", "final_slab_weight": 0.1, "spike_scale": 0.1},
    "langevin": {"step_size": 0.05, "num_steps": 30, "noise": False, "init": "zeros",
                 "prior_step": "explicit", "sparsify": False},
    "optim": {"batch_size": 100, "epochs": 1, "lr": 1e-3},
    "device": "cpu", "seed": 0,
}


def hand_epoch(train_data, config):
    """The same epoch written plainly: infer z by K gradient steps, one Adam step."""
    torch.manual_seed(config.seed)
    from pyro_sparsegen.training import build_network, resolve_device

    device = resolve_device(config.device)
    net = build_network(config, train_data.image_shape).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    w, s1, s0, sigma = 0.1, 1.0, 0.1, 0.3
    log_w, log_1mw = math.log(w), math.log1p(-w)
    h = 0.5 * 0.05**2
    start = time.perf_counter()
    for _, x in train_data.batches(100, shuffle=True, seed=config.seed, epoch=0):
        x = x.to(device, non_blocking=True)
        z = torch.zeros(x.shape[0], 100, device=device)
        for _ in range(30):
            z = z.detach().requires_grad_(True)
            sq = z * z
            prior = torch.logaddexp(log_w - 0.5 * sq / s1**2 - math.log(s1),
                                    log_1mw - 0.5 * sq / s0**2 - math.log(s0)).sum()
            lik = (-0.5 * ((x - net(z)) / sigma) ** 2).sum()
            (grad,) = torch.autograd.grad(prior + lik, z)
            z = z.detach() + h * grad
        opt.zero_grad()
        loss = 0.5 * (((x - net(z)) / sigma) ** 2).flatten(1).sum(1).mean()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def package_epoch(train_data, test_data, config):
    with tempfile.TemporaryDirectory() as out:
        result = train(config, out, train_data=train_data, test_data=test_data,
                       progress=False, figures=False)
    return result.metrics[-1]["seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig.from_dict({**SETTINGS, "device": args.device})
    config.data.eval_images = 100
    train_data, test_data = load_data("mnist5k", "train"), load_data("mnist5k", "test")
    hand, package = [], []
    for r in range(args.repeats):
        hand.append(hand_epoch(train_data, config))
        package.append(package_epoch(train_data, test_data, config))
        print(f"repeat {r}: hand-written {hand[-1]:.2f} s, package {package[-1]:.2f} s")
    h, p = statistics.median(hand), statistics.median(package)
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}")
    print(f"median epoch: hand-written {h:.2f} s, package {p:.2f} s")
    print(f"epoch_vs_handwritten_ratio={p / h:.3f}")


if __name__ == "__main__":
    main()
