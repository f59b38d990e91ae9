"""The package's training loop: :class:`~pyro_sparsegen.ABP` over epochs of a data set, with
atomic checkpoints, metrics, figures, Ctrl-C, resume and torch.distributed.

Training steps leave everything on the device: the steps of a *chunk* (up to
:data:`READ_EVERY` batches, and the end of an epoch) accumulate their loss, reconstruction
error and failure flags there, and only the chunk's end reads them (one host read, one
all-reduce under torch.distributed, where it also carries Ctrl-C). A chunk starts from a
snapshot of the parameters, optimiser state, schedule position and RNG kept on the device: a
bad batch found at the read (a divergence, a non-finite loss, latent or gradient) rolls back
to it and stops with one line, so no checkpoint is ever written from a bad state; a chunk
whose check of the kernel's derived graph failed is redone through the model's trace.
"""

import copy
import csv
import importlib
import math
import os
import random
import shutil
import signal
import sys
import time
import warnings
from typing import NamedTuple

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .abp import ABP, TrainingError, sparsified
from .config import ConfigError, ModelSpecError, TrainConfig, likelihood_scale
from .infer import ShortRunLangevin
from .model import FunctionModel, SparseGenerator
from .networks import ConvGenerator, MLPGenerator

CHECKPOINT = "checkpoint.h5"
BEST = "best.h5"
METRICS = "metrics.csv"
READ_EVERY = 16  # training steps between host reads of the device-side checks

__all__ = ["TrainingError"]  # re-exported from .abp, where ABP raises it


class TrainResult(NamedTuple):
    model: object
    metrics: list
    checkpoint: str
    interrupted: bool


# ------------------------------------------------------------------------------------------
def resolve_device(name):
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed):
    """Seed the global Python, NumPy and torch (CPU and CUDA) streams."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed, rank):
    """The torch seed of ``rank`` under torch.distributed, so that every rank draws its own
    Langevin noise (and prior starts); derived from ``(seed, rank)``."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint64)[0])


def load_splits(config: TrainConfig, train_data=None, test_data=None):
    """The run's train and test :class:`~pyro_sparsegen.data.ImageData` (given ones win)."""
    if train_data is None or test_data is None:
        from .data import load_data

        size = config.data.image_size
        if train_data is None:
            train_data = load_data(config.data.spec, "train", image_size=size)
        if test_data is None:
            test_data = load_data(config.data.spec, "test", image_size=size)
    if len(train_data) < 1:
        raise ConfigError("the training split is empty")
    return train_data, test_data


def build_network(config: TrainConfig, image_shape):
    net = config.network
    if net.type == "conv":
        return ConvGenerator(net.latent_dim, image_shape, width=net.width,
                             input_norm=net.input_norm)
    return MLPGenerator(net.latent_dim, image_shape, hidden=net.hidden, input_norm=net.input_norm)


def import_factory(spec):
    """The object ``MODULE:NAME`` names, importable from the working directory (a user's
    model factory); a module that does not import or a missing name is a one-line
    :class:`~pyro_sparsegen.config.ModelSpecError`."""
    module, _, name = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure of user code is a user error
        raise ModelSpecError(f"--model {spec}: module {module!r} does not import "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                          ) from None
    finally:
        sys.path.pop(0)
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"--model {spec}: {module} has no {name!r}")
        obj = getattr(obj, part)
    return obj


def build_model(config: TrainConfig, image_shape, iterations_per_epoch, model_class=None,
                device=None):
    """A fresh model from the config: a :class:`SparseGenerator` (of ``model_class``, a
    subclass, when given), or what ``config.model`` (``MODULE:NAME``) builds.

    A factory is called ``NAME(image_shape, config)`` and returns a Pyro model following the
    generator convention (a function, wrapped in :class:`~pyro_sparsegen.model.FunctionModel`,
    or a ``PyroModule``); ``config.build_schedule()`` gives it the run's annealing schedule and
    ``config.device`` the device the run uses (``device``, resolved: a function model puts its
    tensors there; a ``PyroModule`` is moved by the caller).
    """
    if config.model is not None:
        factory = import_factory(config.model)
        run_config = TrainConfig.from_dict(config.to_dict())
        run_config.prior.schedule = config.build_schedule(iterations_per_epoch).to_dict()
        if device is not None:
            run_config.device = str(device)
        if not callable(factory):
            raise ModelSpecError(f"--model {config.model}: {type(factory).__name__} is not "
                              "callable (a factory NAME(image_shape, config) -> model)")
        try:
            model = factory(tuple(image_shape), run_config)
        except Exception as e:  # noqa: BLE001 - user code
            raise ModelSpecError(f"--model {config.model}: the factory failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if isinstance(model, torch.nn.Module) and callable(model):
            return model
        if callable(model):
            return FunctionModel(model, image_shape, factory=config.model,
                                 schedule=run_config.build_schedule())
        raise ModelSpecError(f"--model {config.model}: returned {type(model).__name__}, not a "
                          "Pyro model (a function or a PyroModule)")
    cls = model_class or SparseGenerator
    return cls(build_network(config, image_shape),
               schedule=config.build_schedule(iterations_per_epoch),
               noise_scale=likelihood_scale(config.network.noise_scale, image_shape),
               likelihood=config.network.likelihood,
               **({"prior": config.prior.kind} if config.prior.kind != "annealed" else {}))


def make_kernel(model, config: TrainConfig, iterations=None):
    """The kernel of a run's config; ``iterations``: the training steps it will run (for
    ``langevin.compile = "auto"``; ``None``: not a training run, never compiled by "auto")."""
    return ShortRunLangevin(model, **config.langevin.kernel_options(iterations))


def make_optim(config: TrainConfig, device):
    """The run's ``pyro.optim.Adam`` (its step stays on the device on a GPU)."""
    options = {"lr": config.optim.lr, "betas": (config.optim.beta1, config.optim.beta2)}
    if torch.device(device).type == "cuda":
        options["capturable"] = True
    return pyro.optim.Adam(options)


class Encoder:
    """Codes for images ``x: [images, C, H, W]`` -> ``z: [images, latent_dim]`` (detached),
    exactly as training infers them.

    Uses the model's own ``encode`` when it has one (amortised baselines), else a fresh short
    run of the kernel; with ``sparsify`` every coordinate whose inclusion probability is below
    0.5 is then set to exactly 0 (:func:`~pyro_sparsegen.abp.sparsified`). All the inferred
    latents of the last call are in :attr:`last_latents`.
    """

    def __init__(self, model, kernel, sparsify=False):
        self.model, self.kernel, self.sparsify = model, kernel, sparsify
        self.last_run = None  # the kernel's RunStats of the last call (None for an encoder)
        self.last_latents = None

    def __call__(self, x):
        if hasattr(self.model, "encode"):
            with torch.no_grad():
                z = self.model.encode(x)
            self.last_run, self.last_latents = None, {"z": z}
            return z
        latents = self.kernel.infer(x)
        if self.sparsify:
            latents = sparsified(self.model, self.kernel.target((x,), {}), latents, (x,), {})
        self.last_latents = {k: v.detach() for k, v in latents.items()}
        self.last_run = self.kernel.last_run
        return self.last_latents[getattr(self.model, "code_site", "z")]


def make_encoder(model, config: TrainConfig):
    return Encoder(model, make_kernel(model, config), config.langevin.sparsify)


def inclusion_mask(model, z):
    """``inclusion probability >= 0.5``, or ``None`` for priors without one."""
    try:
        with torch.no_grad():
            return model.inclusion_probability(z) >= 0.5
    except (NotImplementedError, AttributeError):
        return None


def active_mask(model, z, threshold):
    """``(|z| > threshold, inclusion probability >= 0.5)``; the second is ``None`` for priors
    without inclusion probabilities."""
    return z.abs() > threshold, inclusion_mask(model, z)


def _squared_error(recon, x):
    return ((recon - x) ** 2).flatten(1).mean(1)


@torch.no_grad()
def _mse(model, z, x):
    return _squared_error(model.decode(z), x)


def evaluate(model, data, encoder, *, threshold=0.2, batch_size=100, limit=None, device="cpu"):
    """Held-out figures: reconstruction MSE from the inferred codes and with every inactive
    coordinate set to exactly 0 ("zeroed"), inactive fractions two ways, log joint.

    :param limit: evaluate only this many images, a class-spread subset
        (:meth:`~pyro_sparsegen.data.ImageData.spread_subset`), never the first ones.
    """
    sums = dict.fromkeys(("test_mse", "zeroed_mse", "zeroed_mse_inclusion",
                          "inactive_fraction_threshold", "inactive_fraction_inclusion",
                          "log_joint"), 0.0)
    count = 0
    if limit is not None:
        data = data.spread_subset(limit)
    n = len(data)
    # the log joint through the model's own trace (a kernel's target; an amortised baseline's
    # encoder has none, so one is made for its model)
    kernel = getattr(encoder, "kernel", None) or ShortRunLangevin(model, noise=False)
    for start in range(0, n, batch_size):
        x = data.batch(range(start, min(start + batch_size, n))).to(device)
        z = encoder(x)
        by_threshold, by_inclusion = active_mask(model, z, threshold)
        sums["test_mse"] += _mse(model, z, x).sum().item()
        sums["zeroed_mse"] += _mse(model, z * by_threshold, x).sum().item()
        sums["inactive_fraction_threshold"] += (~by_threshold).float().mean(1).sum().item()
        if by_inclusion is not None:
            sums["zeroed_mse_inclusion"] += _mse(model, z * by_inclusion, x).sum().item()
            sums["inactive_fraction_inclusion"] += (~by_inclusion).float().mean(1).sum().item()
        else:
            sums["zeroed_mse_inclusion"] = sums["inactive_fraction_inclusion"] = float("nan")
        latents = getattr(encoder, "last_latents", None) or {"z": z}
        with torch.no_grad():
            local, shared, _, _ = kernel.target((x,), {}).terms(latents, (x,), {})
        sums["log_joint"] += (local.sum() + shared.sum()).item()
        count += x.shape[0]
    return {k: v / max(count, 1) for k, v in sums.items()}


# ------------------------------------------------------------------------------------------
class InterruptGuard:
    """SIGINT sets a flag checked between chunks of batches (a second Ctrl-C stops at once)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not in the main thread
            self._previous = None
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def rewrite_csv(path, rows):
    """Write the metrics rows to ``path`` atomically and fsynced
    (:func:`~pyro_sparsegen.checkpoint.atomic_file`)."""
    with ckpt.atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def distributed_context():
    """``(torch.distributed or None, rank, world size)`` of this process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def gather(obj, dist=None):
    """``[obj of rank 0, obj of rank 1, ...]`` (every rank must call it); ``[obj]`` alone."""
    if dist is None:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def stop_everywhere(problem, dist=None, device="cpu"):
    """Raise :class:`TrainingError` on every rank as soon as any rank has a ``problem`` (a
    one-line reason, or ``None``), so that no rank is left waiting in a collective the failed
    one never joins. Under torch.distributed every rank must call it (one flag all-reduce)."""
    if dist is not None:
        flag = torch.tensor([0.0 if problem is None else 1.0], device=device)
        dist.all_reduce(flag)
        if flag.item() > 0:
            rank, problem = next((r, p) for r, p in enumerate(gather(problem, dist))
                                 if p is not None)
            problem = f"rank {rank}: {problem}"
            # every rank leaves together: a rank tearing down while another still finishes
            # the gather can make gloo abort a process at exit
            dist.barrier()
    if problem is not None:
        raise TrainingError(problem)


# ------------------------------------------------------------------------------------------
class _Chunk:
    """The transaction of a chunk of ABP steps: the state it started from (on the device),
    the checks its steps accumulated (on the device), one read at its end."""

    def __init__(self, abp, model, config, device, dist):
        self.abp, self.model, self.config, self.device, self.dist = abp, model, config, device, dist
        self.snapshot = None
        self._zero()

    def _zero(self):
        zero = torch.zeros((), device=self.device)
        self.flags = {"bad": zero.clone(), "bad_update": zero.clone(), "diverged": zero.clone(),
                      "chain_steps": 0, "mismatch": zero.clone()}

    def _params(self):
        params = dict(pyro.get_param_store().named_parameters())
        if isinstance(self.model, torch.nn.Module):
            params.update(self.model.state_dict(keep_vars=True))
        return params

    def begin(self):
        """Keep the state the chunk starts from (copies on the device)."""
        with torch.no_grad():
            params = {k: v.detach().clone() for k, v in self._params().items()}
        self.snapshot = {
            "params": params,
            "optim": {p: copy.deepcopy(o.state_dict())
                      for p, o in self.abp.optim.optim_objs.items()},
            "iteration": self.abp.iteration,
            "handover": getattr(self.model, "handover_iteration", None),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }
        self._zero()

    def add(self, result):
        """Fold one step's :class:`~pyro_sparsegen.abp.StepResult` into the checks."""
        self.flags["bad"] = self.flags["bad"] + result.bad
        self.flags["bad_update"] = self.flags["bad_update"] + result.bad_update
        if result.run is not None:
            self.flags["diverged"] = self.flags["diverged"] + result.run.divergences.sum()
            self.flags["chain_steps"] += result.run.divergences.numel() * self.abp.kernel.num_steps
            if result.run.mismatch is not None:
                self.flags["mismatch"] = self.flags["mismatch"] + result.run.mismatch

    def read(self, interrupted):
        """``(problem or None, graph stale, interrupt anywhere)``: the one host read (and, under
        torch.distributed, the one all-reduce) of a chunk. A problem names the first rank
        that had one."""
        f = self.flags
        row = torch.stack([f["bad"].float(), f["diverged"].float(),
                           torch.tensor(float(f["chain_steps"]), device=self.device),
                           f["bad_update"].float(), f["mismatch"].float(),
                           torch.tensor(float(interrupted), device=self.device)])
        if self.dist is None:
            rows = row.unsqueeze(0)
        else:  # every rank's row, in one all-reduce
            rows = torch.zeros(self.dist.get_world_size(), row.numel(), device=self.device)
            rows[self.dist.get_rank()] = row
            self.dist.all_reduce(rows)
        rows = rows.tolist()
        # the rank whose own step failed (a bad update follows everywhere from the average)
        problem = self._problem(rows, lambda r: r[0] or r[1] > self._limit(r[2])) or \
            self._problem(rows, lambda r: r[3])
        totals = [sum(column) for column in zip(*rows)]
        return problem, totals[4] > 0, totals[5] > 0

    def _limit(self, chain_steps):
        return self.config.langevin.max_divergence_fraction * chain_steps

    def _problem(self, rows, failed):
        for rank, (_, diverged, chain_steps, *_) in enumerate(rows):
            if not failed(rows[rank]):
                continue
            if diverged > self._limit(chain_steps):
                problem = (f"Langevin inference diverged in {int(diverged)} of "
                           f"{int(chain_steps)} chain-steps before iteration "
                           f"{self.abp.iteration} (step size {self.abp.kernel.step_size}); "
                           "lower langevin.step_size — rolled back, the last checkpoint is "
                           "intact")
            else:
                problem = (f"a non-finite loss, code or gradient before iteration "
                           f"{self.abp.iteration}; rolled back to iteration "
                           f"{self.snapshot['iteration']}, the last checkpoint is intact")
            return f"rank {rank}: {problem}" if self.dist is not None else problem
        return None

    def rollback(self):
        """Restore the state the chunk started from."""
        s = self.snapshot
        current = self._params()
        with torch.no_grad():
            for name, value in s["params"].items():
                if name in current:
                    current[name].copy_(value)
        for p, state in s["optim"].items():
            self.abp.optim.optim_objs[p].load_state_dict(state)
        for p in list(self.abp.optim.optim_objs):
            if p not in s["optim"]:  # created during the chunk
                del self.abp.optim.optim_objs[p]
        if hasattr(self.model, "handover_iteration"):
            self.model.handover_iteration = s["handover"]
        self.abp.move_to(s["iteration"])
        torch.set_rng_state(s["torch"])
        if s["cuda"] is not None:
            torch.cuda.set_rng_state_all(s["cuda"])


class CollapseWarning(UserWarning):
    """A run collapsed from its first epoch after the annealing (see :class:`CollapseWatch`)."""


class CollapseWatch:
    """Once the annealing has ended: the epoch with the lowest held-out zeroed MSE so far (its
    checkpoint is kept as ``best.h5``), and a collapse — more than 99 % of the held-out codes
    inactive, or their zeroed MSE doubling within an epoch — which stops training once an
    earlier epoch after the annealing was healthy (the one ``best.h5`` holds). A run collapsed
    from its first epoch after the annealing (a one-epoch trial, say) is warned about once and
    goes on: stopping it would keep nothing better.

    :param annealing_end: the iteration from which the prior no longer moves (``None``: no
        schedule, no watch).
    :param dict state: ``best_zeroed_mse``, ``best_epoch``, ``last_zeroed_mse`` (a resumed
        run's, from its checkpoint).
    """

    INACTIVE, GROWTH = 0.99, 2.0

    def __init__(self, annealing_end, state=None):
        self.annealing_end = annealing_end
        self.state = dict(state or {})

    def update(self, row):
        """Fold in an epoch's metrics row; the collapse's one-line reason, or ``None``."""
        if self.annealing_end is None or row["iteration"] < self.annealing_end:
            return None
        zeroed, inactive = row["zeroed_mse"], row["inactive_fraction_threshold"]
        last = self.state.get("last_zeroed_mse")
        self.state["last_zeroed_mse"] = zeroed
        why = None
        if inactive > self.INACTIVE:
            why = f"{inactive:.1%} of the held-out codes inactive"
        elif last is not None and zeroed >= self.GROWTH * last:
            why = f"held-out zeroed MSE {last:.4f} -> {zeroed:.4f} in one epoch"
        if why is None:  # a collapsed epoch is never the best one
            if zeroed < self.state.get("best_zeroed_mse", math.inf):
                self.state.update(best_zeroed_mse=zeroed, best_epoch=row["epoch"])
            return None
        best = self.state.get("best_epoch")
        if best is None:  # collapsed from the start: no healthy epoch to go back to, so go on
            if not self.state.get("warned"):
                self.state["warned"] = True
                warnings.warn(f"epoch {row['epoch']}, after the annealing: {why}; no earlier "
                              f"healthy epoch to keep, so training goes on", CollapseWarning,
                              stacklevel=2)
            return None
        return (f"collapse after the annealing at epoch {row['epoch']}: {why}; stopped — the "
                f"best checkpoint is {BEST} (epoch {best}, zeroed MSE "
                f"{self.state.get('best_zeroed_mse', math.nan):.4f})")


def _sums_to_host(sums):
    return {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in sums.items()}


def train(config: TrainConfig, out_dir, *, resume=False, model_class=None, train_data=None,
          test_data=None, progress=True, figures=True, on_checkpoint=None, stop_after=None,
          trust_model=False):
    """Train a generator by ABP and write ``out_dir/checkpoint.h5``, ``metrics.csv`` and
    figures. Resumes exactly from the checkpoint with ``resume=True``.

    The model is a :class:`~pyro_sparsegen.SparseGenerator` built from the config (or
    ``model_class``, a subclass), or any Pyro model a factory ``config.model`` builds (see
    :func:`build_model`); the run has a scope of Pyro's param store of its own, and leaves the
    learned parameters in the param store on return. Under torch.distributed every rank draws
    its own Langevin noise (torch seeded with :func:`rank_seed`), the gradients of every
    parameter are averaged across ranks, the checkpoint keeps every rank's RNG states, and a
    run resumes only with the number of processes it was written with.

    :param TrainConfig config: every setting.
    :param model_class: a :class:`SparseGenerator` subclass (a variant prior); on resume the
        checkpoint's recorded class is used, and passing it here is the opt-in to use a
        class from outside this package (see :func:`load_run`).
    :param trust_model: on resume, import the recorded class or factory whatever module it
        is in (passing the same ``config.model`` is the opt-in for a factory).
    :param train_data: an :class:`~pyro_sparsegen.data.ImageData` (default: ``config.data``).
    :param on_checkpoint: called with the checkpoint path after every save (tests use it).
    :param stop_after: stop (checkpointed, resumable) once this many epochs are done, without
        changing the run's length and hence its schedule.
    :return: :class:`TrainResult`
    """
    config.validate()
    with pyro.get_param_store().scope() as scope:  # no parameter of an earlier run leaks in
        result = _train(config, out_dir, resume, model_class, train_data, test_data, progress,
                        figures, on_checkpoint, stop_after, trust_model)
    pyro.get_param_store().set_state(scope)  # the learned values, for pyro.param(name)
    return result


def _train(config, out_dir, resume, model_class, train_data, test_data, progress, figures,
           on_checkpoint, stop_after, trust_model):
    dist, rank, world = distributed_context()
    device = resolve_device(config.device)
    if dist is not None and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    train_data, test_data = load_splits(config, train_data, test_data)
    out_dir = os.fspath(out_dir)
    path = os.path.join(out_dir, CHECKPOINT)
    per_rank = math.ceil(len(train_data) / world)
    iterations_per_epoch = math.ceil(per_rank / config.optim.batch_size)

    if resume:
        state = ckpt.load(path)
        check_resumable(state, config, train_data.image_shape, world)
        model = state.build_model(device, trust_model=trust_model, model_class=model_class,
                                  factory=config.model)
        progress_state, metrics = state.progress, state.metrics
    else:
        if rank == 0:
            try:
                os.makedirs(out_dir, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"{out_dir}: cannot create the output folder "
                                  f"({e.strerror})") from None
            if not os.access(out_dir, os.W_OK):
                raise ConfigError(f"{out_dir}: output folder is not writable")
        seed_everything(config.seed)  # the same initial weights on every rank
        model = build_model(config, train_data.image_shape, iterations_per_epoch, model_class,
                            device)
        if isinstance(model, torch.nn.Module):
            model = model.to(device)
        if world > 1:
            torch.manual_seed(rank_seed(config.seed, rank))
        progress_state, metrics = {"epoch": 0, "iteration": 0, "batch_in_epoch": 0}, []
    kernel = make_kernel(model, config, config.optim.epochs * iterations_per_epoch -
                         progress_state.get("iteration", 0))
    abp = ABP(model, kernel, make_optim(config, device), num_data=len(train_data),
              sparsify=config.langevin.sparsify, iteration=progress_state.get("iteration", 0))
    first = train_data.batch([0]).to(device)
    params = abp.parameters(first)  # registers every parameter (a function model's too)
    if resume:
        if state.optimizer_states is None:
            raise ckpt.CheckpointError(f"{path}: written by format version "
                                       f"{state.format_version}, which cannot be resumed "
                                       "(load it for inference, or train anew)")
        abp.load_optimizer_state(state.optimizer_states, params)
        ckpt.restore_rng(state.rng_ranks[rank] if rank < len(state.rng_ranks) else state.rng)
    encoder = Encoder(model, kernel, config.langevin.sparsify)
    chunk = _Chunk(abp, model, config, device, dist)
    schedule = getattr(model, "schedule", None)
    watch = CollapseWatch(schedule.end if schedule is not None and config.optim.stop_on_collapse
                          else None, progress_state.get("collapse_watch"))

    def save(epoch, batch_in_epoch, epoch_sums):
        rng = gather(ckpt.rng_states(), dist)  # every rank's streams, to rank 0
        problem = None
        if rank == 0:
            prog = {"epoch": epoch, "iteration": abp.iteration,
                    "batch_in_epoch": batch_in_epoch, "epoch_sums": _sums_to_host(epoch_sums),
                    "world_size": world, "collapse_watch": watch.state}
            try:
                ckpt.save(path, model=model, config=config.to_dict(),
                          optimizer_states=abp.optimizer_state(),
                          params=ckpt.store_params(model), progress=prog, metrics=metrics,
                          rng=rng)
                if batch_in_epoch == 0 and watch.state.get("best_epoch") == epoch:  # kept
                    with ckpt.atomic_file(os.path.join(out_dir, BEST)) as tmp:
                        shutil.copyfile(path, tmp)
            except OSError as e:
                if dist is None:
                    raise
                problem = f"cannot write {path} ({e})"
            if on_checkpoint is not None and problem is None:
                on_checkpoint(path)
        # also the barrier: when any rank goes on (e.g. to resume), the file is in place
        stop_everywhere(problem, dist, device)

    def step(x):
        result = abp.device_step(x)
        chunk.add(result)
        out = {"loss": result.loss * x.shape[0], "images": x.shape[0]}
        if "x" in result.reconstruction:
            mean, observed = result.reconstruction["x"]
            out["mse"] = ((mean - observed) ** 2).flatten(1).mean(1).sum()
        return out

    def end_epoch(epoch, epoch_sums):
        row, problem = None, None
        try:
            row = epoch_row(model, encoder, config, test_data, device, epoch,
                            _sums_to_host(epoch_sums), iteration=abp.iteration)
        except TrainingError as e:
            problem = str(e)
        stop_everywhere(problem, dist, device)
        metrics.append(row)
        if rank == 0:
            rewrite_csv(os.path.join(out_dir, METRICS), metrics)
        stop_everywhere(watch.update(row), dist, device)  # no checkpoint of a collapsed epoch
        return {"mse": f"{row['test_mse']:.4f}", "zeroed": f"{row['zeroed_mse']:.4f}",
                "inactive": f"{row['inactive_fraction_threshold']:.2f}",
                "w": f"{row['slab_weight']:.3g}"}

    bar = tqdm(total=config.optim.epochs * iterations_per_epoch, initial=abp.iteration,
               disable=not progress or rank != 0, desc="train", unit="batch", dynamic_ncols=True)
    epoch, interrupted = run_epochs(
        model, config, train_data, step, end_epoch, save, progress_state=progress_state,
        fresh_sums={"mse": 0.0, "loss": 0.0, "images": 0, "seconds": 0.0}, bar=bar,
        device=device, stop_after=stop_after, rank=rank, world=world, dist=dist, chunk=chunk)
    if rank == 0 and figures and not interrupted and epoch >= config.optim.epochs:
        write_figures(model, encoder, test_data, metrics, out_dir, config, device)
    return TrainResult(model, metrics, path, interrupted)


def run_epochs(model, config, train_data, step, end_epoch, save, *, progress_state, fresh_sums,
               bar, device, stop_after=None, rank=0, world=1, dist=None, chunk=None):
    """The epoch loop every training loop of the package shares (ABP and the baselines).

    Resumes at ``progress_state`` (``epoch``, ``batch_in_epoch``, ``epoch_sums``); per batch
    ``step(x) -> {sum: increment}`` (numbers or device tensors); after an epoch
    ``end_epoch(epoch, sums) -> postfix`` and ``save(epoch + 1, 0, fresh sums)``; on Ctrl-C (any
    rank's, under torch.distributed) ``save(epoch, next batch, sums)`` and stop.

    With a ``chunk`` (ABP's :class:`_Chunk`) the batches run in chunks of up to
    :data:`READ_EVERY` that end with one read of the steps' checks (and Ctrl-C is looked at
    there, or at once in a single process); a bad chunk rolls back and stops with
    :class:`TrainingError`, a chunk whose
    derived graph went stale is rolled back and redone through the model's trace. Without one
    (the baselines, which check in their own steps) Ctrl-C is looked at after every batch.

    :return: ``(epochs done, interrupted)``
    """
    epoch = progress_state["epoch"]
    start_batch = progress_state.get("batch_in_epoch", 0)
    sums = dict(progress_state.get("epoch_sums") or fresh_sums)
    last_epoch = config.optim.epochs if stop_after is None else min(stop_after,
                                                                      config.optim.epochs)
    every = READ_EVERY if chunk is not None else 1
    with InterruptGuard() as interrupt, bar:
        while epoch < last_epoch:
            model.train()
            tick = time.perf_counter()
            batches = train_data.batches(config.optim.batch_size, shuffle=True,
                                         seed=config.seed, epoch=epoch, rank=rank,
                                         world_size=world, start=start_batch)
            pending, b = [], start_batch - 1
            for b, (_, x) in enumerate(batches, start=start_batch):
                pending.append(x.to(device, non_blocking=True))
                # one process: Ctrl-C ends the chunk at once (the flag is a Python bool)
                if len(pending) < every and not (interrupt.requested and dist is None):
                    continue
                sums, stop = _run_chunk(pending, step, sums, chunk, interrupt, dist, device, bar)
                pending = []
                if stop:
                    sums["seconds"] += time.perf_counter() - tick
                    save(epoch, b + 1, sums)
                    return epoch, True
            if pending:
                sums, stop = _run_chunk(pending, step, sums, chunk, interrupt, dist, device, bar)
                if stop:
                    sums["seconds"] += time.perf_counter() - tick
                    save(epoch, b + 1, sums)
                    return epoch, True
            start_batch = 0
            sums["seconds"] += time.perf_counter() - tick
            bar.set_postfix(end_epoch(epoch, sums))
            epoch += 1
            sums = dict(fresh_sums)
            save(epoch, 0, sums)
    return epoch, False


def _run_chunk(batches, step, sums, chunk, interrupt, dist, device, bar):
    """Run ``batches`` through ``step`` as one chunk: ``(sums, stop requested)``."""
    if chunk is None:  # the caller's steps check themselves: Ctrl-C after every batch
        for x in batches:
            for key, value in step(x).items():
                sums[key] += value
            bar.update(1)
        stop = interrupt.requested
        if dist is not None:
            flag = torch.tensor([float(stop)], device=device)
            dist.all_reduce(flag)
            stop = flag.item() > 0
        return sums, stop
    for attempt in range(2):
        chunk.begin()
        new = dict(sums)
        for x in batches:
            for key, value in step(x).items():
                new[key] = new[key] + value
        problem, stale, stop = chunk.read(interrupt.requested)
        if problem is not None:
            chunk.rollback()
            if dist is not None:
                dist.barrier()  # every rank leaves together (see stop_everywhere)
            raise TrainingError(problem)
        if not stale or attempt:
            bar.update(len(batches))
            return new, stop
        # the kernel's derived graph disagreed with the model's trace: redo through the trace
        chunk.rollback()
        chunk.abp.kernel.graph_went_stale()
    raise AssertionError("unreachable")


def check_resumable(state, config, image_shape, world_size=1):
    saved = TrainConfig.from_dict(state.config)
    written_by = state.progress.get("world_size")
    if written_by is not None and written_by != world_size:
        raise ConfigError(f"the checkpoint was written by {written_by} process(es); resume it "
                          f"with as many (this run has {world_size})")
    if saved.model != config.model:
        raise ConfigError(f"the checkpoint's model is {saved.model or 'the built-in one'}; "
                          f"the config asks for {config.model or 'the built-in one'}")
    net = state.network
    if config.model is None:
        if net.get("type") != config.network.type:
            raise ConfigError(f"checkpoint holds a {net.get('type')} network; the config asks "
                              f"for {config.network.type}")
        if net.get("latent_dim") != config.network.latent_dim:
            raise ConfigError(f"checkpoint has latent size {net.get('latent_dim')}; the config "
                              f"asks for {config.network.latent_dim}")
    if tuple(state.image_shape or ()) != tuple(image_shape):
        raise ConfigError(f"checkpoint was trained on images {tuple(state.image_shape or ())}; "
                          f"the data has {tuple(image_shape)}")
    if saved.optim.batch_size != config.optim.batch_size or saved.seed != config.seed:
        raise ConfigError("resume needs the checkpoint's batch size and seed "
                          f"({saved.optim.batch_size}, {saved.seed})")


def epoch_row(model, encoder, config, test_data, device, epoch, epoch_sums, extra=None, *,
              iteration=None):
    """One ``metrics.csv`` row: training sums, held-out figures, prior parameters, and the
    loop's own ``extra`` columns before ``seconds``."""
    model.eval()
    figures = evaluate(model, test_data, encoder, threshold=config.threshold,
                       batch_size=config.optim.batch_size, limit=config.data.eval_images,
                       device=device)
    images = max(epoch_sums["images"], 1)
    params = _prior_params(model, config)
    extra = dict(extra or {})
    if "loss" in epoch_sums:
        extra.setdefault("train_loss", epoch_sums["loss"] / images)
    row = {"epoch": epoch + 1,
           "iteration": getattr(model, "iteration", None) if iteration is None else iteration,
           "train_mse": epoch_sums.get("mse", float("nan")) / images, **figures,
           "slab_weight": params[0], "slab_scale": params[1], "spike_scale": params[2],
           **extra, "seconds": epoch_sums["seconds"]}
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value) and key.endswith("mse"):
            raise TrainingError(f"evaluation gave a non-finite {key} after epoch {epoch + 1}")
    return row


def _prior_params(model, config):
    """The annealed prior's parameters now (NaN for a model without a schedule)."""
    try:
        return tuple(model.prior_params())
    except AttributeError:
        return (float("nan"),) * 3


# ------------------------------------------------------------------------------------------
@torch.no_grad()
def reconstructions(model, encoder, x, *, threshold=0.2, observed=None):
    """``(g(z), g(z with every |z| <= threshold set to 0))`` for the codes ``encoder``
    infers from ``observed`` (default ``x``, e.g. a noisy copy of it)."""
    with torch.enable_grad():  # the Langevin run differentiates the log density
        z = encoder(x if observed is None else observed)
    active, _ = active_mask(model, z, threshold)
    return model.decode(z), model.decode(z * active)


def write_figures(model, encoder, data, metrics, out_dir, config, device, num=16):
    """Training curves, reconstructions, prior samples and the code-usage chart."""
    from . import plots

    model.eval()
    rows = data.spread_rows(num)  # split files are often sorted by class
    x = data.batch(rows).to(device)
    recon, zeroed = reconstructions(model, encoder, x, threshold=config.threshold)
    samples, _ = model.generate(num)
    out = {
        "curves": plots.plot_training_curves(metrics, os.path.join(out_dir, "training_curves.png")),
        "reconstructions": plots.plot_image_grid(
            [x.cpu(), recon.cpu(), zeroed.cpu()], os.path.join(out_dir, "reconstructions.png"),
            titles=["test images", "reconstructions", "inactive coordinates zeroed"]),
        "samples": plots.plot_image_grid([samples[i::2].cpu() for i in range(2)],
                                         os.path.join(out_dir, "samples.png"),
                                         titles=["samples from the prior", ""]),
    }
    from .encoding import encode_dataset

    codes = encode_dataset(model, data, encoder, threshold=config.threshold,
                           batch_size=config.optim.batch_size, device=device, limit=1000)
    usage = codes["active"].mean(0)
    out["code_usage"] = plots.plot_code_usage(usage, os.path.join(out_dir, "code_usage.png"),
                                              title="fraction of test images using each dimension")
    return out


def load_run(run_dir, device="cpu", *, trust_model=False, model_class=None, model=None):
    """``(model, config, checkpoint)`` from a run folder (or a checkpoint file).

    The model is rebuilt as the class (or factory) the checkpoint records. Code from outside
    this package is imported only when the caller opts in — ``trust_model=True``, the class
    itself passed as ``model_class`` (it must be the recorded one; nothing is imported then),
    or ``model`` (``MODULE:NAME``) naming the recorded factory: a file from someone else must
    not decide what code runs. Otherwise
    :class:`~pyro_sparsegen.checkpoint.CheckpointError`, and nothing is imported. A function
    model's parameters are put into Pyro's param store.
    """
    config, state = read_run(run_dir)
    built = state.build_model(device, trust_model=trust_model, model_class=model_class,
                              factory=model)
    return built, config, state


def read_run(run_dir):
    """``(config, checkpoint)`` of a run folder (or a checkpoint file), without rebuilding
    the model (nothing is imported)."""
    run_dir = os.fspath(run_dir)
    if not os.path.exists(run_dir):
        raise ckpt.CheckpointError(f"{run_dir}: no such run folder")
    path = run_dir if os.path.isfile(run_dir) else os.path.join(run_dir, CHECKPOINT)
    if not os.path.exists(path):
        raise ckpt.CheckpointError(f"{run_dir}: no {CHECKPOINT} in this run folder")
    state = ckpt.load(path)
    try:
        config = TrainConfig.from_dict(state.config)
    except (ConfigError, TypeError) as e:
        raise ckpt.CheckpointError(f"{path}: stored config is invalid ({e})") from None
    return config, state
