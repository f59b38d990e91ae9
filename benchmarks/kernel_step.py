"""Cost of a ShortRunLangevin step against a hand-written PyTorch Langevin loop.

Times, in one process, paired and repeated (all variants run once per repeat, in a rotating
order; medians over the repeats are reported):

(a) a plain PyTorch Langevin loop with the same spike-and-slab prior and Gaussian likelihood,
    written with torch ops (``z.requires_grad_`` + ``torch.autograd.grad``);
(b) ``ShortRunLangevin.infer`` on :class:`~pyro_sparsegen.SparseGenerator`;
(c) Pyro's ``HMC(num_steps=1)`` (fixed step size, no adaptation), per gradient, by calling
    ``kernel.sample`` directly;

for the authors' MNIST MLP (``MLPGenerator(100)``, batch 100) and a conv generator (d=64,
28x28, batch 64), with K = 30 steps of size delta = 0.05, the noise on, the generator in its
training state (parameters requiring grad). Both the explicit step (b computes exactly what a
computes) and the semi-implicit prior step are timed; the semi-implicit hand loop applies the
same preconditioner, with the spike-and-slab curvature (each component's precision weighted by
its responsibility) in closed form.

A ratio is the median over repeats of b/a (or c/a) measured within one repeat, which cancels
slow drifts of a shared machine's load; the ratio of the medians is printed next to it.
Every step of (b) evaluates the model once, plus once more at the start: K + 1 gradients per
run where the hand loop needs K (the last one checks the final state for divergence and gives
``last_run``'s log densities), so 1/K of any ratio is that extra evaluation.

Run: ``python benchmarks/kernel_step.py`` (``--threads``, ``--repeats``, ``--budget``). The
last line is ``kernel_vs_handwritten_max_ratio=R``: the larger explicit b/a of the two cases.
"""

import argparse
import math
import os
import statistics
import time

import pyro
import torch
from pyro.infer.mcmc import HMC

from pyro_sparsegen import ConvGenerator, MLPGenerator, ShortRunLangevin, SparseGenerator
from pyro_sparsegen import schedules

STEP_SIZE = 0.05
NUM_STEPS = 30
NOISE_SCALE = 0.3
SLAB_WEIGHT, SLAB_SCALE, SPIKE_SCALE = 0.1, 1.0, 0.1


# -- (a) the hand-written loop --------------------------------------------------------------
def hand_langevin(network, x, latent_dim, *, semi_implicit=False):
    """K Langevin steps on log N(x; g(z), sigma^2) + log spike-and-slab(z), from zeros."""
    w = torch.tensor(SLAB_WEIGHT, dtype=x.dtype, device=x.device)
    s1 = torch.tensor(SLAB_SCALE, dtype=x.dtype, device=x.device)
    s0 = torch.tensor(SPIKE_SCALE, dtype=x.dtype, device=x.device)
    log_w, log_1mw = w.log(), torch.log1p(-w)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    log_sigma = math.log(NOISE_SCALE)
    h = 0.5 * STEP_SIZE**2
    z = torch.zeros(x.shape[0], latent_dim, dtype=x.dtype, device=x.device)
    for _ in range(NUM_STEPS):
        z = z.detach().requires_grad_(True)
        sq = z * z
        slab = log_w - 0.5 * sq / s1**2 - s1.log() - half_log_2pi
        spike = log_1mw - 0.5 * sq / s0**2 - s0.log() - half_log_2pi
        log_prior = torch.logaddexp(slab, spike).sum()
        mean = network(z)
        log_lik = (-0.5 * ((x - mean) / NOISE_SCALE) ** 2 - log_sigma - half_log_2pi).sum()
        (grad,) = torch.autograd.grad(log_prior + log_lik, z)
        with torch.no_grad():
            step = h * grad + STEP_SIZE * torch.randn_like(z)
            if semi_implicit:
                # -d/dz log p(z) / z: each component's precision weighted by its responsibility
                r = torch.sigmoid(slab - spike)
                kappa = r / s1**2 + (1 - r) / s0**2
                step = step / (1 + h * kappa)
            z = z + step
    return z.detach()


# -- (b) the kernel; (c) Pyro's HMC -----------------------------------------------------------
def make_model(network):
    schedule = schedules.constant(SLAB_WEIGHT, SLAB_SCALE, SPIKE_SCALE)
    return SparseGenerator(network, schedule=schedule, noise_scale=NOISE_SCALE)


def make_hmc(model, x):
    hmc = HMC(model, step_size=STEP_SIZE, num_steps=1, adapt_step_size=False,
              adapt_mass_matrix=False, full_mass=False)
    with pyro.validation_enabled(False):
        hmc.setup(0, x)
    return hmc


def hmc_steps(hmc, num_steps):
    """``num_steps`` HMC transitions of one leapfrog step each: one gradient per transition."""
    params = hmc.initial_params
    with pyro.validation_enabled(False):
        for _ in range(num_steps):
            params = hmc.sample(params)
    return params


# -- timing ------------------------------------------------------------------------------------
DEVICE = torch.device("cpu")


def timed(fn):
    start = time.perf_counter()
    fn()
    if DEVICE.type == "cuda":  # queued kernels count
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_case(name, network, image_shape, batch, repeats, budget):
    torch.manual_seed(0)
    network = network.to(DEVICE)
    x = torch.rand(batch, *image_shape, device=DEVICE)
    d = network.latent_dim
    model = make_model(network)
    explicit = ShortRunLangevin(model, step_size=STEP_SIZE, num_steps=NUM_STEPS, noise=True)
    semi = ShortRunLangevin(model, step_size=STEP_SIZE, num_steps=NUM_STEPS, noise=True,
                            prior_step="semi-implicit")
    hmc = make_hmc(model, x)
    variants = {
        "a  hand explicit": lambda: hand_langevin(network, x, d),
        "b  kernel explicit": lambda: explicit.infer(x),
        "a' hand semi-implicit": lambda: hand_langevin(network, x, d, semi_implicit=True),
        "b' kernel semi-implicit": lambda: semi.infer(x),
        "c  pyro HMC(num_steps=1)": lambda: hmc_steps(hmc, NUM_STEPS),
    }
    for fn in variants.values():  # warm-up: allocator, first-call caches
        fn()
    times = {k: [] for k in variants}
    names = list(variants)
    start = time.perf_counter()
    for r in range(repeats):
        # rotate the order so no variant always runs first (or after the same neighbour)
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(timed(variants[k]) / NUM_STEPS)
        if r >= 4 and time.perf_counter() - start > budget:
            break
    done = len(times[names[0]])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n== {name}: batch {batch}, latent {d}, image {tuple(image_shape)}, "
          f"K={NUM_STEPS}, delta={STEP_SIZE}, {done} repeats ==")
    for k, v in med.items():
        q = statistics.quantiles(times[k], n=4)
        print(f"  {k:26s} median {v * 1e3:8.3f} ms/step  (IQR {q[0] * 1e3:.3f}-{q[2] * 1e3:.3f})")
    pairs = {
        "explicit b/a": ("b  kernel explicit", "a  hand explicit"),
        "semi-implicit b'/a'": ("b' kernel semi-implicit", "a' hand semi-implicit"),
        "HMC c/a": ("c  pyro HMC(num_steps=1)", "a  hand explicit"),
    }
    ratios = {}
    for k, (num, den) in pairs.items():
        ratios[k] = statistics.median(n / d for n, d in zip(times[num], times[den]))
        print(f"  ratio {k:20s} {ratios[k]:6.3f} (median of paired ratios; "
              f"{med[num] / med[den]:.3f} as a ratio of medians)")
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="repeats per case (at most)")
    parser.add_argument("--budget", type=float, default=40.0,
                        help="seconds per case after which no new repeat starts (min. 5)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads (default: the cores this process may use)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, {torch.get_num_threads()} "
          f"threads, float32, {DEVICE}")
    mlp = run_case("MLP (authors' MNIST)", MLPGenerator(100), (1, 28, 28), 100, args.repeats,
                   args.budget)
    conv = run_case("Conv", ConvGenerator(64, (1, 28, 28)), (1, 28, 28), 64, args.repeats,
                    args.budget)
    print()
    for key in ("semi-implicit b'/a'", "HMC c/a"):
        print(f"{key}: MLP {mlp[key]:.3f}, conv {conv[key]:.3f}")
    worst = max(mlp["explicit b/a"], conv["explicit b/a"])
    print(f"kernel_vs_handwritten_max_ratio={worst:.3f}")


if __name__ == "__main__":
    main()
