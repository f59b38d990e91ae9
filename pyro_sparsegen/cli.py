"""The ``pyro-sparsegen`` command line: train, encode, sample, reconstruct, analyze.

Every error a user can cause prints one line to stderr and exits non-zero, without a
traceback. ``torchrun --nproc_per_node=N -m pyro_sparsegen train ...`` trains on N processes.
"""

import argparse
import os
import sys

from .config import PRIOR_KINDS
from .errors import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, SparsegenError, first_line,
                     is_user_error, report_bug)
from .files import FolderLock, output_folder



class UsageError(SparsegenError, ValueError):
    """A command line the parser (or a check of its values) refuses."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one line: it raises :class:`UsageError` instead
    of printing the usage block and exiting (the caller prints the line)."""

    def error(self, message):
        raise UsageError(message)


def _add_common(p):
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--trust-model", action="store_true",
                   help="load a run whose model class is defined outside pyro_sparsegen "
                        "(imports and runs the module the checkpoint names)")
    p.add_argument("--model", metavar="MODULE:NAME",
                   help="a model factory NAME(image_shape, config) importable from MODULE (the "
                        "working directory is on the path); for a run trained with one, the "
                        "same value is the opt-in to import it")


def build_parser():
    parser = ArgumentParser(prog="pyro-sparsegen", description="Sparse latent generator models "
                     "(spike-and-slab prior, short-run Langevin): train, encode, sample, "
                     "reconstruct, analyze.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    t = sub.add_parser("train", help="train a sparse generator (alternating back-propagation)")
    t.add_argument("--data", help="data spec (default mnist5k): mnist5k, digits, idx:DIR, "
                                  "npz:PATH, h5:PATH, folder:DIR")
    t.add_argument("--out", default="runs/default", help="run folder (default runs/default)")
    t.add_argument("--image-size", type=int, metavar="N",
                   help="resize every image to N x N (default: the data's own size)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--latent-dim", type=int)
    t.add_argument("--network", choices=["mlp", "conv"])
    t.add_argument("--schedule", help="prior schedule preset: default, dense, authors, spike, "
                                      "constant")
    t.add_argument("--final-slab-weight", type=float, help="the schedule's final slab weight")
    t.add_argument("--spike-scale", type=float, help="the schedule's final spike scale")
    t.add_argument("--dense-fraction", type=float,
                   help="the share of the run the default / v1 schedule keeps the prior dense "
                        "before annealing (default 0.3, v1 0.1; at most 0.5)")
    t.add_argument("--slab-scale", type=float,
                   help="the slab's scale in the default / v1 schedule (default 1)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--step-size", type=float, help="Langevin step size delta")
    t.add_argument("--num-steps", type=int, help="Langevin steps per batch K")
    t.add_argument("--prior-step", choices=["explicit", "semi-implicit"],
                   help="how the Langevin step treats the prior (default semi-implicit)")
    t.add_argument("--prior", choices=PRIOR_KINDS,
                   help="the built-in model's prior: the annealed schedule (default), or slab "
                        "weights learned after the annealing (per dimension; learned-scale: "
                        "the slab scales too; hierarchical: Beta-distributed with learned "
                        "concentrations)")
    t.add_argument("--noise", action="store_true", default=None,
                   help="Langevin noise on in training (with --prior-step explicit: ULA)")
    t.add_argument("--metropolis", action="store_true", default=None,
                   help="Metropolis-adjusted steps (MALA; needs --noise)")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the Langevin short run with torch.compile (default: auto, "
                        "for runs of at least 600 steps)")
    t.add_argument("--eval-images", type=int, help="held-out images evaluated per epoch")
    t.add_argument("--seed", type=int)
    t.add_argument("--dtype", choices=["float32", "float64"],
                   help="floating dtype of the weights, codes and chains (default float32; "
                        "recorded in the checkpoint: resume, encode and analyze use it)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--config", help="a JSON or TOML config file (flags override it)")
    t.add_argument("--recipe", choices=["default", "v1"],
                   help="named settings applied before the flags: default, or v1 (the first "
                        "release's recipe: slab weight 1 -> 0.5, free generator, sigma 0.3)")
    _add_common(t)

    e = sub.add_parser("encode", help="infer codes z for a data set and save them to HDF5")
    e.add_argument("run_dir")
    e.add_argument("--data", help="data spec (default: the run's)")
    e.add_argument("--split", default="test", choices=["train", "test", "all"])
    e.add_argument("--out", help="output .h5 (default RUN_DIR/codes_SPLIT.h5)")
    _add_common(e)

    s = sub.add_parser("sample", help="draw images from the prior")
    s.add_argument("run_dir")
    s.add_argument("--num", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="output PNG (default RUN_DIR/samples_cli.png)")
    _add_common(s)

    r = sub.add_parser("reconstruct", help="reconstruct (optionally noisy) test images")
    r.add_argument("run_dir")
    r.add_argument("--data", help="data spec (default: the run's)")
    r.add_argument("--noise", type=float, default=0.0,
                   help="std of added Gaussian noise (not clipped, as in the authors' "
                        "evaluation)")
    r.add_argument("--clip", action="store_true",
                   help="clip the noisy images to [0, 1] (the harder variant)")
    r.add_argument("--num", type=int, default=16)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", help="output PNG (default RUN_DIR/reconstruct.png)")
    _add_common(r)

    a = sub.add_parser("analyze", help="ArviZ analysis of posterior sparsity and code usage")
    a.add_argument("run_dir")
    a.add_argument("--data", help="data spec (default: the run's)")
    a.add_argument("--split", default="test", choices=["train", "test", "all"])
    # defaults sized to about 10 minutes on a 2-core CPU for the default model
    # (docs/diagnostics.md, "On the default run")
    a.add_argument("--images", type=int, default=64, help="images analysed (default 64)")
    a.add_argument("--levels", type=int, default=None,
                   help="replica-exchange levels per ladder (default: 12 where the model can "
                        "be tempered per image, none otherwise; 0: off)")
    a.add_argument("--chains", type=int, default=8,
                   help="independent chains (ladders) per image (default 8)")
    a.add_argument("--draws", type=int, default=100, help="kept draws per chain (default 100)")
    a.add_argument("--warmup", type=int, default=800,
                   help="adapting transitions before the draws (default 800)")
    a.add_argument("--thin", type=int, default=10, help="transitions per kept draw (default 10)")
    a.add_argument("--prior-step", choices=["explicit", "semi-implicit"],
                   default="semi-implicit", help="the MALA step's prior part (default "
                   "semi-implicit)")
    a.add_argument("--warm-start", type=int, default=0,
                   help="noise-free steps from every chain's start before the warm-up "
                        "(default 0: off)")
    a.add_argument("--init", choices=["zeros", "prior", "normal"], default=None,
                   help="where every chain starts (default: prior draws, so that R-hat means "
                        "something)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", help="output folder (default RUN_DIR/analysis)")
    _add_common(a)
    return parser


# ------------------------------------------------------------------------------------------
def _positive(name, value, allow_zero=False):
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise UsageError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, "
                         f"got {value}")


def _writable_file(path):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{folder}: output folder does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{folder}: output folder is not writable")
    return path


def _train_config(args):
    from .config import TrainConfig

    if args.resume:
        from .builders import read_run

        from .builders import run_dtype

        config, state = read_run(args.out)  # the model class is checked when train loads it
        config.dtype = run_dtype(state)  # the dtype it trained in (its weights', if unset)
    elif args.config:
        config = TrainConfig.from_file(args.config)
    else:
        config = TrainConfig()
    if args.recipe is not None:
        if args.resume:
            raise UsageError("--recipe starts a run; --resume continues one with its own "
                             "settings")
        config.apply_recipe(args.recipe)
    overrides = {
        ("data", "spec"): args.data, ("optim", "epochs"): args.epochs,
        ("network", "latent_dim"): args.latent_dim, ("network", "type"): args.network,
        ("prior", "preset"): args.schedule, ("prior", "final_slab_weight"):
            args.final_slab_weight, ("prior", "spike_scale"): args.spike_scale,
        ("prior", "dense_fraction"): args.dense_fraction,
        ("prior", "slab_scale"): args.slab_scale,
        ("optim", "batch_size"): args.batch_size, ("optim", "lr"): args.lr,
        ("langevin", "step_size"): args.step_size, ("langevin", "num_steps"): args.num_steps,
        ("langevin", "prior_step"): args.prior_step, ("prior", "kind"): args.prior,
        ("langevin", "noise"): args.noise, ("langevin", "metropolis"): args.metropolis,
        ("langevin", "compile"): args.compile,
        ("data", "eval_images"): args.eval_images, ("data", "image_size"): args.image_size,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), key, value)
    if args.seed is not None:
        config.seed = args.seed
    if args.dtype is not None:
        if args.resume and args.dtype != config.dtype:
            raise UsageError(f"--dtype {args.dtype}: the run in {args.out} trains in "
                             f"{config.dtype}; --resume continues it so")
        config.dtype = args.dtype
    if args.device is not None:
        config.device = args.device
    if args.model is not None and not args.resume:
        config.model = args.model
    return config.validate()


def _check_model_spec(spec):
    """``--model MODULE:NAME`` must import and name a callable (else a one-line
    :class:`~pyro_sparsegen.config.ModelSpecError`: exit 2)."""
    if spec is None:
        return
    from .builders import import_factory
    from .config import MODEL_SPEC, ModelSpecError

    if not MODEL_SPEC.fullmatch(spec):
        raise ModelSpecError(f"--model must be MODULE:NAME, got {spec!r}")
    factory = import_factory(spec)
    if not callable(factory):
        raise ModelSpecError(f"--model {spec}: {type(factory).__name__} is not a model factory "
                             "(a callable NAME(image_shape, config) -> model)")


def _init_distributed(config):
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    import torch.distributed as dist

    backend = "nccl" if config.device.startswith("cuda") or (
        config.device == "auto" and torch.cuda.is_available()) else "gloo"
    dist.init_process_group(backend)
    return dist


def cmd_train(args):
    from .checkpoint import CHECKPOINT
    from .training import train

    if args.resume and (args.config or args.data):
        raise UsageError("--resume continues the run in --out with its own config and data; "
                         "drop --config/--data")
    _check_model_spec(args.model)
    config = _train_config(args)
    if args.resume and args.model is not None and args.model != config.model:
        raise UsageError(f"--model {args.model}: the run in {args.out} was trained with "
                         f"{config.model or 'the built-in model'}")
    # one writer per run folder: the lock first (rank 0's, for the whole job), so that a folder
    # a live process is writing is refused as such, not as one that "already holds a run"
    lock = FolderLock.acquire(args.out) if os.path.isdir(args.out) and \
        os.environ.get("RANK", "0") == "0" else None
    try:
        if not args.resume and os.path.exists(os.path.join(args.out, CHECKPOINT)):
            raise UsageError(f"{args.out} already holds a run; use --resume to continue it or "
                             "choose another --out")
        dist = _init_distributed(config)
        try:
            result = train(config, args.out, resume=args.resume, progress=not args.quiet,
                           trust_model=args.trust_model)
        finally:
            if dist is not None:
                dist.destroy_process_group()
    finally:
        if lock is not None:
            lock.release()
    if result.interrupted:
        print(f"interrupted: checkpoint saved to {result.checkpoint}; continue with "
              f"pyro-sparsegen train --out {args.out} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.metrics:
        last = result.metrics[-1]
        print(f"done: epoch {last['epoch']}, test MSE {last['test_mse']:.4f}, zeroed MSE "
              f"{last['zeroed_mse']:.4f}, inactive {last['inactive_fraction_threshold']:.1%} "
              f"(|z|<=0.2) / {last['inactive_fraction_inclusion']:.1%} (inclusion<0.5); "
              f"wrote {args.out}")
    return 0


def _load(args):
    import torch

    from .builders import load_run
    from .config import ConfigError
    from .runtime import resolve_device

    device = resolve_device(args.device or "auto", error=ConfigError)
    _check_model_spec(args.model)
    model, config, state = load_run(args.run_dir, device=device, trust_model=args.trust_model,
                                    model=args.model)
    if getattr(args, "seed", None) is not None:
        torch.manual_seed(args.seed)
    return model, config, state, device


def _check_shape(model, data):
    if tuple(data.image_shape) != tuple(model.image_shape):
        raise UsageError(f"data {data.name!r} has images {tuple(data.image_shape)}, but the "
                         f"model generates {tuple(model.image_shape)}")


def cmd_encode(args):
    from .encoding import infer_codes, make_inference, save_codes

    model, config, state, device = _load(args)
    from .data import load_data

    data = load_data(args.data or config.data.spec, args.split,
                     image_size=config.data.image_size)
    _check_shape(model, data)
    out = _writable_file(args.out or os.path.join(args.run_dir, f"codes_{args.split}.h5"))
    codes = infer_codes(model, data, make_inference(model, config), threshold=config.threshold,
                        batch_size=config.optim.batch_size, device=device, progress=not args.quiet)
    save_codes(out, codes, source=state.path, data=data.name, split=args.split)
    print(f"wrote {len(data)} codes to {out}")
    return 0


def cmd_sample(args):
    from . import plots

    _positive("--num", args.num)
    model, config, state, device = _load(args)
    out = _writable_file(args.out or os.path.join(args.run_dir, "samples_cli.png"))
    images, _ = model.generate(args.num)
    cols = min(16, args.num)
    rows = [images[i:i + cols].cpu() for i in range(0, args.num, cols)]
    plots.plot_image_grid(rows, out)
    print(f"wrote {args.num} samples to {out}")
    return 0


def cmd_reconstruct(args):
    import torch

    from . import plots
    from .data import load_data
    from .encoding import make_inference
    from .evaluation import add_noise
    from .figures import reconstructions

    _positive("--num", args.num)
    _positive("--noise", args.noise, allow_zero=True)
    model, config, state, device = _load(args)
    data = load_data(args.data or config.data.spec, "test", image_size=config.data.image_size)
    _check_shape(model, data)
    out = _writable_file(args.out or os.path.join(args.run_dir, "reconstruct.png"))
    rows = data.spread_rows(min(args.num, len(data)), seed=args.seed)  # classes spread
    x = data.batch(rows).to(device)
    noisy = torch.as_tensor(add_noise(x.cpu().numpy(), args.noise, seed=args.seed,
                                      clip=args.clip), device=device) if args.noise else x
    recon, zeroed = reconstructions(model, make_inference(model, config), x,
                                    threshold=config.threshold, observed=noisy)
    rows = [x.cpu()] + ([noisy.cpu()] if args.noise else []) + [recon.cpu(), zeroed.cpu()]
    noise = f"noise std {args.noise}" + (", clipped to [0, 1]" if args.clip else "")
    titles = ["test images"] + ([noise] if args.noise else []) + \
        ["reconstructions", "inactive coordinates zeroed"]
    plots.plot_image_grid(rows, out, titles=titles)
    mse = ((recon - x) ** 2).mean().item()
    print(f"wrote {out} (MSE against the clean images {mse:.4f})")
    return 0


def cmd_analyze(args):
    from . import diagnostics
    from .data import load_data

    for name in ("images", "chains", "draws", "thin"):
        _positive(f"--{name}", getattr(args, name))
    _positive("--warmup", args.warmup, allow_zero=True)
    _positive("--levels", args.levels, allow_zero=True)
    _positive("--warm-start", args.warm_start, allow_zero=True)
    if args.levels == 1:
        raise UsageError("--levels must be 0 (off) or at least 2")
    model, config, state, device = _load(args)
    data = load_data(args.data or config.data.spec, args.split,
                     image_size=config.data.image_size)
    _check_shape(model, data)
    out = output_folder(args.out or os.path.join(args.run_dir, "analysis"), error=UsageError)
    # a class-spread subset: split files are often sorted by class
    rows = data.spread_rows(min(args.images, len(data)), seed=args.seed)
    x = data.batch(rows).to(device)
    labels = data.labels[rows] if data.labels is not None else None
    result = diagnostics.analyze(
        model, x, out, labels=labels, chains=args.chains, draws=args.draws, warmup=args.warmup,
        thin=args.thin, source=state.path, step_size=config.langevin.step_size, init=args.init,
        tempering="auto" if args.levels is None else (args.levels or None),
        prior_step=args.prior_step, warm_start=args.warm_start, progress=not args.quiet)
    print(f"wrote {out}/idata.nc, summary.md and figures")
    for key, value in result.items():
        if isinstance(value, (int, float)):
            print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


COMMANDS = {"train": cmd_train, "encode": cmd_encode, "sample": cmd_sample,
            "reconstruct": cmd_reconstruct, "analyze": cmd_analyze}


def main(argv=None):
    """The command line: the exit status of ``argv``'s command (0; 1 for an error of the
    user's, 2 for a usage error, 130 when interrupted, 70 for an internal error)."""
    import warnings

    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor")
    warnings.formatwarning = lambda message, *_a, **_k: f"pyro-sparsegen: warning: {message}\n"
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("pyro-sparsegen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - sorted below: a user's error or a bug
        from .config import ModelSpecError

        if isinstance(e, (UsageError, ModelSpecError)):
            print(f"pyro-sparsegen: error: {first_line(e)}", file=sys.stderr)
            return EXIT_USAGE
        if is_user_error(e):  # the package's own errors, the OS's (a missing file, a full disk)
            return _error(e)
        return report_bug("pyro-sparsegen", e)  # anything else is a bug: its traceback


def _error(e):
    print(f"pyro-sparsegen: error: {first_line(e)}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
