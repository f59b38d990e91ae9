"""Cost of a ShortRunLangevin step against a hand-written PyTorch Langevin loop.

Times, in one process, paired and repeated (the variants are interleaved in every repeat and
the medians reported):

(a) a plain PyTorch Langevin loop with the same spike-and-slab prior and Gaussian likelihood,
    written with torch ops (``z.requires_grad_`` + ``torch.autograd.grad``);
(b) ``ShortRunLangevin.infer`` on :class:`~pyro_sparsegen.SparseGenerator`;
(c) Pyro's ``HMC(num_steps=1)`` (fixed step size, no adaptation), per gradient, by calling
    ``kernel.sample`` directly;

for the authors' MNIST MLP (``MLPGenerator(100)``, batch 100) and a conv generator (d=64,
28x28, batch 64), with K = 30 steps of size delta = 0.05 and the noise on. Both the explicit
step (b matches a exactly) and the semi-implicit prior step are timed; the semi-implicit
hand loop computes the same responsibility-weighted curvature in closed form.

Run: ``python benchmarks/kernel_step.py``. The last line is
``kernel_vs_handwritten_max_ratio=R``: the largest b/a over the explicit MLP and conv cases.
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
                # -d/dz log p(z) / z: each component's precision weighted by its responsibility.
                r = torch.sigmoid(slab - spike)
                kappa = r / s1**2 + (1 - r) / s0**2
                step = step / (1 + h * kappa)
            z = z + step
    return z.detach()


# -- (b) the kernel; (c) Pyro's HMC -----------------------------------------------------------
def make_model(network):
    return SparseGenerator(network, schedule=schedules.constant(SLAB_WEIGHT, SLAB_SCALE,
                                                                 SPIKE_SCALE),
                           noise_scale=NOISE_SCALE)


def make_hmc(model, x):
    hmc = HMC(model, step_size=STEP_SIZE, num_steps=1, adapt_step_size=False,
              adapt_mass_matrix=False, full_mass=False)
    with pyro.validation_enabled(False):
        hmc.setup(0, x)
    return hmc


def hmc_steps(hmc, num_steps):
    params = hmc.initial_params
    with pyro.validation_enabled(False):
        for _ in range(num_steps):
            params = hmc.sample(params)
    return params


# -- timing ------------------------------------------------------------------------------------
def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(name, network, image_shape, batch, repeats):
    torch.manual_seed(0)
    x = torch.rand(batch, *image_shape)
    d = network.latent_dim
    model = make_model(network)
    explicit = ShortRunLangevin(model, step_size=STEP_SIZE, num_steps=NUM_STEPS, noise=True)
    semi = ShortRunLangevin(model, step_size=STEP_SIZE, num_steps=NUM_STEPS, noise=True,
                            prior_step="semi-implicit")
    hmc = make_hmc(model, x)
    variants = {
        "hand explicit": lambda: hand_langevin(network, x, d),
        "kernel explicit": lambda: explicit.infer(x),
        "hand semi-implicit": lambda: hand_langevin(network, x, d, semi_implicit=True),
        "kernel semi-implicit": lambda: semi.infer(x),
        "pyro HMC(num_steps=1)": lambda: hmc_steps(hmc, NUM_STEPS),
    }
    for fn in variants.values():  # warm-up: allocator, first-call caches
        fn()
    times = {k: [] for k in variants}
    names = list(variants)
    for r in range(repeats):
        # rotate the order so no variant always runs first (or after the same neighbour)
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(timed(variants[k]) / NUM_STEPS)
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(num, den):  # median over repeats of the ratio within a repeat
        return statistics.median(n / d for n, d in zip(times[num], times[den]))
    print(f"\n== {name}: batch {batch}, latent {d}, image {tuple(image_shape)}, "
          f"K={NUM_STEPS}, delta={STEP_SIZE}, {repeats} repeats ==")
    for k, v in med.items():
        spread = statistics.quantiles(times[k], n=4)
        print(f"  {k:24s} median {v * 1e3:8.3f} ms/step  (IQR {spread[0] * 1e3:.3f}"
              f"-{spread[2] * 1e3:.3f})")
    pairs = {
        "explicit b/a": ("kernel explicit", "hand explicit"),
        "semi-implicit b/a": ("kernel semi-implicit", "hand semi-implicit"),
        "HMC c/a": ("pyro HMC(num_steps=1)", "hand explicit"),
    }
    ratios = {}
    for k, (num, den) in pairs.items():
        ratios[k] = paired(num, den)
        print(f"  ratio {k:18s} {med[num] / med[den]:6.3f} of medians, "
              f"{ratios[k]:6.3f} median of paired ratios")
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, "
          f"{torch.get_num_threads()} threads, float32, CPU")
    mlp = run_case("MLP (authors' MNIST)", MLPGenerator(100), (1, 28, 28), 100, args.repeats)
    conv = run_case("Conv", ConvGenerator(64, (1, 28, 28)), (1, 28, 28), 64, args.repeats)
    semi = max(mlp["semi-implicit b/a"], conv["semi-implicit b/a"])
    print(f"\nsemi_implicit_vs_handwritten_max_ratio={semi:.3f}")
    worst = max(mlp["explicit b/a"], conv["explicit b/a"])
    print(f"kernel_vs_handwritten_max_ratio={worst:.3f}")


if __name__ == "__main__":
    main()
