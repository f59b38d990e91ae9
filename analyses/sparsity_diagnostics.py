"""How sparse is the posterior of each image, which latent dimensions does the model use (and
for which classes), and did the short-run chains agree?

Uses only the public API of ``pyro_sparsegen``: it samples replica short-run Langevin chains
for every image (:func:`pyro_sparsegen.diagnostics.analyze`), then writes ``idata.nc``
(reload with ``arviz.from_netcdf``), ``summary.md`` (the tables) and the figures.

    # a trained run (the folder written by ``pyro-sparsegen train``)
    python analyses/sparsity_diagnostics.py --run runs/default --out runs/default/analysis

    # standalone: an untrained generator on scikit-learn's 8x8 digits (checks the pipeline)
    python analyses/sparsity_diagnostics.py --demo --images 64 --draws 100 --out /tmp/demo

Copy it as the starting point of your own analysis: the numbers it prints are those of the
returned dict, the tables are in ``summary.md``.
"""

import argparse
import sys
import warnings

warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor",
                        category=FutureWarning)

import torch  # noqa: E402

import pyro_sparsegen as psg  # noqa: E402
from pyro_sparsegen import diagnostics  # noqa: E402


def demo_model_and_data(num_images, latent_dim, seed):
    """An untrained sparse generator for scikit-learn's digits, and the first images (the
    digits come in mixed class order)."""
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    digits = load_digits()
    x = torch.as_tensor(digits.images[:num_images, None] / 16.0, dtype=torch.float32)
    network = psg.MLPGenerator(latent_dim, (1, 8, 8), hidden=(64,))
    model = psg.SparseGenerator(network, schedule=psg.schedules.constant(slab_weight=0.1))
    return model, x, digits.target[:num_images], "demo: untrained MLPGenerator on sklearn digits"


def run_model_and_data(run_dir, data_spec, split, num_images, device, seed):
    """The trained model of a run folder and ``num_images`` images of its (or the given)
    data, a seeded class-spread subset (data files are often sorted by class)."""
    try:
        from pyro_sparsegen.builders import load_run
        from pyro_sparsegen.data import load_data
    except ImportError as e:
        sys.exit(f"sparsity_diagnostics: loading runs needs pyro_sparsegen.builders.load_run "
                 f"and pyro_sparsegen.data.load_data, not available here ({e})")
    try:
        model, config, state = load_run(run_dir, device=device)
        data = load_data(data_spec or config.data.spec, split)
    except ValueError as e:  # CheckpointError, DataError: a one-line reason
        sys.exit(f"sparsity_diagnostics: {e}")
    rows = data.spread_rows(num_images, seed)
    x = data.batch(rows).to(device)
    labels = None if data.labels is None else data.labels[rows]
    kernel = {"step_size": config.langevin.step_size, "prior_step": config.langevin.prior_step}
    return model, x, labels, getattr(state, "path", run_dir), kernel


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="RUN_DIR", help="a run folder (or checkpoint file)")
    source.add_argument("--demo", action="store_true",
                        help="an untrained generator on sklearn digits (no run needed)")
    p.add_argument("--data", help="data spec for --run (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "test", "all"])
    p.add_argument("--images", type=int, default=256, help="number of images (default 256)")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--warmup", type=int, default=None,
                   help="Langevin steps before the first kept draw (default 30)")
    p.add_argument("--top", type=int, default=10,
                   help="R-hat/ESS of z on the TOP most-used dimensions (default 10)")
    p.add_argument("--latent-dim", type=int, default=16, help="--demo only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    for name in ("images", "chains", "draws", "top", "latent_dim"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")

    torch.manual_seed(args.seed)
    if args.demo:
        model, x, labels, source_name = demo_model_and_data(args.images, args.latent_dim,
                                                            args.seed)
        kernel = {}
    else:
        model, x, labels, source_name, kernel = run_model_and_data(
            args.run, args.data, args.split, args.images, args.device, args.seed)

    result = diagnostics.analyze(model, x, args.out, labels=labels, chains=args.chains,
                                 draws=args.draws, warmup=args.warmup, source=source_name,
                                 top=args.top, **kernel)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result["stage_seconds"].items())
    print(f"{x.shape[0]} images x {args.chains} chains x {args.draws} draws "
          f"in {result['seconds']:.1f} s ({stages})")
    for key in ("inactive_fraction_magnitude", "inactive_fraction_inclusion", "dead_dimensions",
                "class_jaccard", "max_rhat", "divergences"):
        value = result[key]
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"wrote {result['idata']}, {result['summary']}")
    for name, path in result["figures"].items():
        print(f"  figure {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
