"""Alternating back-propagation (ABP) under the annealed prior.

Per mini-batch: infer ``z`` with a fresh short run of :class:`ShortRunLangevin` (the generator
frozen), one optimizer step on the generator maximising ``log p(x, z)`` (for the network
weights that is ``log p(x | z)``; learnable prior parameters of a variant get the prior term),
then advance the schedule (``model.iteration += 1``).
"""

import contextlib
import csv
import math
import os
import random
import signal
import time
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import ConfigError, TrainConfig
from .kernels import ShortRunLangevin
from .model import SparseGenerator
from .networks import ConvGenerator, MLPGenerator

CHECKPOINT = "checkpoint.h5"
METRICS = "metrics.csv"


class TrainingError(RuntimeError):
    """Training stopped because something went numerically wrong (nothing bad was saved)."""


class TrainResult(NamedTuple):
    model: SparseGenerator
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

        if train_data is None:
            train_data = load_data(config.data.spec, "train")
        if test_data is None:
            test_data = load_data(config.data.spec, "test")
    if len(train_data) < 1:
        raise ConfigError("the training split is empty")
    return train_data, test_data


def build_network(config: TrainConfig, image_shape):
    net = config.network
    if net.type == "conv":
        return ConvGenerator(net.latent_dim, image_shape, width=net.width)
    return MLPGenerator(net.latent_dim, image_shape, hidden=net.hidden)


def build_model(config: TrainConfig, image_shape, iterations_per_epoch, model_class=None):
    """A fresh model from the config (``model_class``: a :class:`SparseGenerator` subclass)."""
    cls = model_class or SparseGenerator
    return cls(build_network(config, image_shape),
               schedule=config.build_schedule(iterations_per_epoch),
               noise_scale=config.network.noise_scale, likelihood=config.network.likelihood)


def make_kernel(model, config: TrainConfig):
    return ShortRunLangevin(model, **config.langevin.kernel_options())


class Encoder:
    """Codes for images ``x: [images, C, H, W]`` -> ``z: [images, latent_dim]`` (detached).

    Uses the model's own ``encode`` when it has one (amortised baselines), else a fresh short
    Langevin run. With ``sparsify=True`` every coordinate whose inclusion probability is below
    0.5 is then set to exactly 0: the code's gate assignment with the spike collapsed to a
    point mass, so the generator learns from, and decodes, codes that really are sparse.
    """

    def __init__(self, model, kernel, sparsify=False):
        self.model, self.kernel, self.sparsify = model, kernel, sparsify
        self.last_run = None  # the kernel's RunStats of the last call (None for an encoder)

    def __call__(self, x):
        if hasattr(self.model, "encode"):
            with torch.no_grad():
                z = self.model.encode(x)
            self.last_run = None
        else:
            z = self.kernel.infer(x)["z"].detach()
            self.last_run = self.kernel.last_run
        if self.sparsify:
            by_inclusion = inclusion_mask(self.model, z)
            if by_inclusion is not None:
                z = z * by_inclusion
        return z


def make_encoder(model, config: TrainConfig):
    return Encoder(model, make_kernel(model, config), config.langevin.sparsify)


def inclusion_mask(model, z):
    """``inclusion probability >= 0.5``, or ``None`` for priors without one."""
    with contextlib.suppress(NotImplementedError, AttributeError):
        return model.inclusion_probability(z) >= 0.5
    return None


def active_mask(model, z, threshold):
    """``(|z| > threshold, inclusion probability >= 0.5)``; the second is ``None`` for priors
    without inclusion probabilities."""
    return z.abs() > threshold, inclusion_mask(model, z)


def joint_terms(model, z, x):
    """``(reconstruction g(z), log p(z), log p(x | z))`` per image, from one pass through the
    generator (the likelihood's mean is the reconstruction)."""
    likelihood = model.likelihood(z)
    return likelihood.mean, model.log_prior_terms({"z": z}), likelihood.log_prob(x)


def _squared_error(recon, x):
    return ((recon - x) ** 2).flatten(1).mean(1)


@torch.no_grad()
def _mse(model, z, x):
    return _squared_error(model.network(z), x)


def evaluate(model, data, encoder, *, threshold=0.2, batch_size=100, limit=None, device="cpu"):
    """Held-out figures: reconstruction MSE from the inferred codes and with every inactive
    coordinate set to exactly 0 ("zeroed"), inactive fractions two ways, log joint.

    :param limit: evaluate only this many images, a class-spread subset
        (:meth:`~pyro_sparsegen.data.ImageData.spread_subset`), never the first ones.
    """
    sums = {k: 0.0 for k in ("test_mse", "zeroed_mse", "zeroed_mse_inclusion",
                             "inactive_fraction_threshold", "inactive_fraction_inclusion",
                             "log_joint")}
    count = 0
    if limit is not None:
        data = data.spread_subset(limit)
    n = len(data)
    for start in range(0, n, batch_size):
        x = data.batch(range(start, min(start + batch_size, n))).to(device)
        z = encoder(x)
        by_threshold, by_inclusion = active_mask(model, z, threshold)
        b = x.shape[0]
        with torch.no_grad():
            recon, log_prior, log_lik = joint_terms(model, z, x)
        sums["test_mse"] += _squared_error(recon, x).sum().item()
        sums["zeroed_mse"] += _mse(model, z * by_threshold, x).sum().item()
        sums["inactive_fraction_threshold"] += (~by_threshold).float().mean(1).sum().item()
        if by_inclusion is not None:
            sums["zeroed_mse_inclusion"] += _mse(model, z * by_inclusion, x).sum().item()
            sums["inactive_fraction_inclusion"] += (~by_inclusion).float().mean(1).sum().item()
        else:
            sums["zeroed_mse_inclusion"] = sums["inactive_fraction_inclusion"] = float("nan")
        sums["log_joint"] += (log_prior + log_lik).sum().item()
        count += b
    return {k: v / max(count, 1) for k, v in sums.items()}


# ------------------------------------------------------------------------------------------
class InterruptGuard:
    """SIGINT sets a flag checked between batches (a second Ctrl-C stops at once)."""

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


@contextlib.contextmanager
def _network_as(model, network):
    original = model.network
    model.network = network
    try:
        yield
    finally:
        model.network = original


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


def train(config: TrainConfig, out_dir, *, resume=False, model_class=None, train_data=None,
          test_data=None, progress=True, figures=True, on_checkpoint=None, stop_after=None,
          trust_model=False):
    """Train a sparse generator (ABP) and write ``out_dir/checkpoint.h5``, ``metrics.csv`` and
    figures. Resumes exactly from the checkpoint with ``resume=True``.

    Under torch.distributed every rank draws its own Langevin noise (torch seeded with
    :func:`rank_seed`); the checkpoint keeps every rank's RNG states, and a run resumes only
    with the number of processes it was written with.

    :param TrainConfig config: every setting.
    :param model_class: a :class:`SparseGenerator` subclass (a variant prior); on resume the
        checkpoint's recorded class is used, and passing it here is the opt-in to use a
        class from outside this package (see :func:`load_run`).
    :param trust_model: on resume, import the recorded class whatever module it is in.
    :param train_data: an :class:`~pyro_sparsegen.data.ImageData` (default: ``config.data``).
    :param on_checkpoint: called with the checkpoint path after every save (tests use it).
    :param stop_after: stop (checkpointed, resumable) once this many epochs are done, without
        changing the run's length and hence its schedule.
    :return: :class:`TrainResult`
    """
    config.validate()
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
        model = state.build_model(device, trust_model=trust_model, model_class=model_class)
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
        model = build_model(config, train_data.image_shape, iterations_per_epoch,
                            model_class).to(device)
        if world > 1:
            torch.manual_seed(rank_seed(config.seed, rank))
        progress_state, metrics = {"epoch": 0, "iteration": 0, "batch_in_epoch": 0}, []
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr,
                                 betas=(config.optim.beta1, config.optim.beta2))
    if resume and state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state)
    if resume:  # every rank its own streams (a checkpoint from before they were kept: rank 0's)
        ckpt.restore_rng(state.rng_ranks[rank] if rank < len(state.rng_ranks) else state.rng)
    ddp_network = None
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        ddp_network = DistributedDataParallel(
            model.network, device_ids=[device.index] if device.type == "cuda" else None)
    encoder = make_encoder(model, config)

    def save(epoch, batch_in_epoch, epoch_sums):
        rng = gather(ckpt.rng_states(), dist)  # every rank's streams, to rank 0
        problem = None
        if rank == 0:
            prog = {"epoch": epoch, "iteration": model.iteration,
                    "batch_in_epoch": batch_in_epoch, "epoch_sums": epoch_sums,
                    "world_size": world}
            try:
                ckpt.save(path, model=model, config=config.to_dict(), optimizer=optimizer,
                          progress=prog, metrics=metrics, rng=rng)
            except OSError as e:
                if dist is None:
                    raise
                problem = f"cannot write {path} ({e})"
            if on_checkpoint is not None and problem is None:
                on_checkpoint(path)
        # also the barrier: when any rank goes on (e.g. to resume), the file is in place
        stop_everywhere(problem, dist, device)

    def step(x):
        mse = _train_step(model, encoder, optimizer, x, config, ddp_network, dist)
        return {"mse": mse * x.shape[0], "images": x.shape[0]}

    def end_epoch(epoch, epoch_sums):
        row, problem = None, None
        try:
            row = epoch_row(model, encoder, config, test_data, device, epoch, epoch_sums)
        except TrainingError as e:
            problem = str(e)
        stop_everywhere(problem, dist, device)
        metrics.append(row)
        if rank == 0:
            rewrite_csv(os.path.join(out_dir, METRICS), metrics)
        return {"mse": f"{row['test_mse']:.4f}", "zeroed": f"{row['zeroed_mse']:.4f}",
                "inactive": f"{row['inactive_fraction_threshold']:.2f}",
                "w": f"{row['slab_weight']:.3g}"}

    bar = tqdm(total=config.optim.epochs * iterations_per_epoch, initial=model.iteration,
               disable=not progress or rank != 0, desc="train", unit="batch", dynamic_ncols=True)
    epoch, interrupted = run_epochs(
        model, config, train_data, step, end_epoch, save, progress_state=progress_state,
        fresh_sums={"mse": 0.0, "images": 0, "seconds": 0.0}, bar=bar, device=device,
        stop_after=stop_after, rank=rank, world=world, dist=dist)
    if rank == 0 and figures and not interrupted and epoch >= config.optim.epochs:
        write_figures(model, encoder, test_data, metrics, out_dir, config, device)
    return TrainResult(model, metrics, path, interrupted)


def run_epochs(model, config, train_data, step, end_epoch, save, *, progress_state, fresh_sums,
               bar, device, stop_after=None, rank=0, world=1, dist=None):
    """The epoch loop every training loop of the package shares (ABP and the baselines).

    Resumes at ``progress_state`` (``epoch``, ``batch_in_epoch``, ``epoch_sums``); per batch
    ``step(x) -> {sum: increment}``; after an epoch ``end_epoch(epoch, sums) -> postfix`` and
    ``save(epoch + 1, 0, fresh sums)``; on Ctrl-C (any rank's, under torch.distributed)
    ``save(epoch, next batch, sums)`` and stop.

    :return: ``(epochs done, interrupted)``
    """
    epoch = progress_state["epoch"]
    start_batch = progress_state.get("batch_in_epoch", 0)
    sums = progress_state.get("epoch_sums") or dict(fresh_sums)
    last_epoch = config.optim.epochs if stop_after is None else min(stop_after,
                                                                      config.optim.epochs)
    with InterruptGuard() as interrupt, bar:
        while epoch < last_epoch:
            model.train()
            tick = time.perf_counter()
            batches = train_data.batches(config.optim.batch_size, shuffle=True,
                                         seed=config.seed, epoch=epoch, rank=rank,
                                         world_size=world)
            for b, (_, x) in enumerate(batches):
                if b < start_batch:
                    continue
                for key, value in step(x.to(device, non_blocking=True)).items():
                    sums[key] += value
                bar.update(1)
                stop = interrupt.requested
                if dist is not None:
                    flag = torch.tensor([float(stop)], device=device)
                    dist.all_reduce(flag)
                    stop = flag.item() > 0
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


def check_resumable(state, config, image_shape, world_size=1):
    saved = TrainConfig.from_dict(state.config)
    written_by = state.progress.get("world_size")
    if written_by is not None and written_by != world_size:
        raise ConfigError(f"the checkpoint was written by {written_by} process(es); resume it "
                          f"with as many (this run has {world_size})")
    net = state.network
    if net.get("type") != config.network.type:
        raise ConfigError(f"checkpoint holds a {net.get('type')} network; the config asks for "
                          f"{config.network.type}")
    if net.get("latent_dim") != config.network.latent_dim:
        raise ConfigError(f"checkpoint has latent size {net.get('latent_dim')}; the config asks "
                          f"for {config.network.latent_dim}")
    if tuple(net.get("image_shape", ())) != tuple(image_shape):
        raise ConfigError(f"checkpoint was trained on images {tuple(net['image_shape'])}; the "
                          f"data has {tuple(image_shape)}")
    if saved.optim.batch_size != config.optim.batch_size or saved.seed != config.seed:
        raise ConfigError("resume needs the checkpoint's batch size and seed "
                          f"({saved.optim.batch_size}, {saved.seed})")


def _inference_problem(model, encoder, z, config):
    """Why the codes ``z`` of this batch must not be learned from (one line), or ``None``."""
    stats = encoder.last_run
    diverged = stats.divergences.sum() if stats is not None else torch.zeros((), device=z.device)
    diverged, bad_codes = torch.stack([diverged.float(),
                                       (~torch.isfinite(z)).sum().float()]).tolist()  # one sync
    if stats is not None:
        chain_steps = stats.divergences.numel() * encoder.kernel.num_steps
        if diverged > config.langevin.max_divergence_fraction * chain_steps:
            return (f"Langevin inference diverged in {int(diverged)} of {chain_steps} "
                    f"chain-steps at iteration {model.iteration} (step size "
                    f"{encoder.kernel.step_size}); lower langevin.step_size — weights were not "
                    "updated, the last checkpoint is intact")
    if bad_codes:
        return (f"non-finite codes ({int(bad_codes)} coordinates) at iteration "
                f"{model.iteration}; weights were not updated, the last checkpoint is intact")
    return None


def _train_step(model, encoder, optimizer, x, config, ddp_network, dist=None):
    z = encoder(x)
    stop_everywhere(_inference_problem(model, encoder, z, config), dist, x.device)
    optimizer.zero_grad(set_to_none=True)
    network = ddp_network if ddp_network is not None else model.network
    with _network_as(model, network):
        recon, log_prior, log_lik = joint_terms(model, z, x)
    # a mean over this rank's images: DDP averages the ranks' gradients, so equal shards give
    # the gradient of the mean over the global batch
    loss = -(log_prior + log_lik).mean()
    mse = ((recon.detach() - x) ** 2).mean()  # before the step, from the same forward pass
    stop_everywhere(None if torch.isfinite(loss) else (
        f"non-finite training loss ({loss.item()}) at iteration {model.iteration}; weights "
        "were not updated"), dist, x.device)
    loss.backward()
    if ddp_network is not None:
        _average_other_grads(model)
    optimizer.step()
    model.iteration += 1
    return mse.item()


def _average_other_grads(model):
    """DDP averages the network's gradients; average the rest (e.g. learned prior
    parameters of a variant) the same way so every rank takes the same step."""
    import torch.distributed as dist

    network = {id(p) for p in model.network.parameters()}
    world = dist.get_world_size()
    for p in model.parameters():
        if id(p) not in network and p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def epoch_row(model, encoder, config, test_data, device, epoch, epoch_sums, extra=None):
    """One ``metrics.csv`` row: training sums, held-out figures, prior parameters, and the
    loop's own ``extra`` columns before ``seconds``."""
    model.eval()
    figures = evaluate(model, test_data, encoder, threshold=config.threshold,
                       batch_size=config.optim.batch_size, limit=config.data.eval_images,
                       device=device)
    params = model.prior_params()
    row = {"epoch": epoch + 1, "iteration": model.iteration,
           "train_mse": epoch_sums["mse"] / max(epoch_sums["images"], 1), **figures,
           "slab_weight": params.slab_weight, "slab_scale": params.slab_scale,
           "spike_scale": params.spike_scale, **(extra or {}), "seconds": epoch_sums["seconds"]}
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value) and key.endswith("mse"):
            raise TrainingError(f"evaluation gave a non-finite {key} after epoch {epoch + 1}")
    return row


# ------------------------------------------------------------------------------------------
@torch.no_grad()
def reconstructions(model, encoder, x, *, threshold=0.2, observed=None):
    """``(g(z), g(z with every |z| <= threshold set to 0))`` for the codes ``encoder``
    infers from ``observed`` (default ``x``, e.g. a noisy copy of it)."""
    with torch.enable_grad():  # the Langevin run differentiates the log density
        z = encoder(x if observed is None else observed)
    active, _ = active_mask(model, z, threshold)
    return model.network(z), model.network(z * active)


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


def load_run(run_dir, device="cpu", *, trust_model=False, model_class=None):
    """``(model, config, checkpoint)`` from a run folder (or a checkpoint file).

    The model is rebuilt as the class the checkpoint records. A class from outside this
    package is imported only when the caller opts in — ``trust_model=True``, or the class
    itself passed as ``model_class`` (it must be the recorded one; nothing is imported then):
    a file from someone else must not decide what code runs. Otherwise
    :class:`~pyro_sparsegen.checkpoint.CheckpointError`, and nothing is imported.
    """
    config, state = read_run(run_dir)
    model = state.build_model(device, trust_model=trust_model, model_class=model_class)
    return model, config, state


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
