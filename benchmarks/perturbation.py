"""How a one-ulp perturbation of one weight grows per training step (ABP on the embedded
digits, the default recipe at latent size 8, batch 64, noise off), in float32 and float64:
why training is reproducible bit for bit only on one machine with one thread count and one
torch build (docs/training.md). Prints, per step, the largest weight difference between the
run and its perturbed twin, and the geometric mean growth per step before saturation.

    OMP_NUM_THREADS=1 python benchmarks/perturbation.py [--steps 16]
"""

import argparse
import math

import pyro
import torch

from pyro_sparsegen import ABP, builders
from pyro_sparsegen.config import TrainConfig, default_dtype
from pyro_sparsegen.data import load_data


def trajectory(dtype, steps, perturb, x):
    config = TrainConfig.from_dict({"data": {"spec": "digits"}, "network": {"latent_dim": 8},
                                    "optim": {"batch_size": 64}, "device": "cpu",
                                    "dtype": dtype})
    with default_dtype(dtype):
        pyro.clear_param_store()
        torch.manual_seed(0)
        model = builders.build_model(config, (1, 8, 8), 20)
        if perturb:  # one ulp of one weight of the first layer
            with torch.no_grad():
                w = next(model.parameters()).view(-1)
                w[0] = torch.nextafter(w[0], torch.tensor(math.inf, dtype=w.dtype))
        kernel = builders.make_kernel(model, config, steps)
        abp = ABP(model, kernel, builders.make_optim(config, "cpu"), num_data=len(x) * 20)
        out = []
        for step in range(steps):
            torch.manual_seed(1000 + step)  # the same draws in both runs
            abp.step(x[(step * 64) % len(x):][:64].to(torch.get_default_dtype()))
            out.append(torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()]))
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = load_data("digits", "train").images()[:640]
    for dtype in ("float32", "float64"):
        a = trajectory(dtype, args.steps, False, x)
        b = trajectory(dtype, args.steps, True, x)
        diffs = [float((p - q).abs().max()) for p, q in zip(a, b)]
        growth = [d1 / d0 for d0, d1 in zip(diffs, diffs[1:]) if d0 > 0 and d1 < 1e-3]
        mean = math.exp(sum(map(math.log, growth)) / len(growth)) if growth else float("nan")
        print(f"{dtype}: max |weight difference| after each step: "
              + ", ".join(f"{d:.1e}" for d in diffs))
        print(f"{dtype}: growth per step (geometric mean while < 1e-3): x{mean:.1f}")


if __name__ == "__main__":
    main()
