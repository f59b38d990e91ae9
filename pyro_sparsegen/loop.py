"""The training loop every learner of the package shares: one run folder (:class:`Run`: the
device, the splits, a fresh or resumed model, the checkpoint, ``metrics.csv``, figures) and its
epochs (:func:`run_epochs`), driven through a small learner protocol (:class:`Learner`) that
ABP (:mod:`pyro_sparsegen.training`) and the SVI baselines
(:mod:`pyro_sparsegen.baselines.svi`) implement.

Steps may leave everything on the device: with a :class:`RollbackTransaction` the steps of a
*chunk* (up to :data:`READ_EVERY` batches, and the end of an epoch) accumulate their loss,
reconstruction error and failure flags there, and only the chunk's end reads them (one host
read, one all-reduce under torch.distributed, where it also carries Ctrl-C). A chunk starts
from a snapshot of the learner's state and the RNG kept on the device: a bad batch found at the
read (a divergence, a non-finite loss, latent or gradient) rolls back to it and stops with one
line, so no checkpoint is ever written from a bad state; a chunk whose check of the kernel's
traced transition failed is redone through the model's trace.
"""

import math
import os
import shutil
import time
from typing import NamedTuple, Optional, Protocol

import torch
from tqdm.auto import tqdm

from . import builders
from . import checkpoint as ckpt
from .abp import TrainingError
from .config import ConfigError, TrainConfig
from .files import FolderLock, atomic_file, output_folder
from .monitor import CollapseWatch, epoch_row, rewrite_csv
from .runtime import (InterruptGuard, any_rank, distributed_context, gather, rank_seed,
                      resolve_device, restore_rng, rng_states, seed_everything, stop_everywhere)

READ_EVERY = 16  #: training steps between host reads of the device-side checks


class TrainResult(NamedTuple):
    """What a training run returns: the trained model, the metrics rows, the checkpoint's
    path, and whether Ctrl-C stopped it (checkpointed, resumable)."""

    model: object
    metrics: list
    checkpoint: str
    interrupted: bool


class Learner(Protocol):
    """What the loop drives; one step per batch.

    - ``model``: the model it trains; ``iteration``: steps done (saved as the checkpoint's
      ``progress["iteration"]``);
    - ``transaction``: a :class:`RollbackTransaction` its steps report their checks to (the
      loop reads them once per chunk), or ``None`` when its steps check themselves (and raise);
    - ``step(x) -> {sum: increment}``: one step on the images ``x``; the increments (Python
      numbers or 0-dim device tensors) are added to the epoch's sums (``images`` and any of
      ``loss``, ``mse``);
    - ``state_dict() -> {name: torch optimiser state dict}`` and ``load_state_dict(states)``:
      the optimiser states a checkpoint keeps.
    """

    model: object
    iteration: int
    transaction: Optional["RollbackTransaction"]

    def step(self, x) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, states) -> None: ...


# ------------------------------------------------------------------------------------------
class RollbackTransaction:
    """The transaction of a chunk of kernel-based learner steps (:class:`~pyro_sparsegen.ABP`):
    the state it started from (:meth:`~pyro_sparsegen.ABP.snapshot` and the RNG, on the
    device), the checks its steps accumulated (on the device), one read at its end, and the
    rollback to its start.

    :param learner: an :class:`~pyro_sparsegen.ABP` (``snapshot`` / ``restore``,
        ``iteration``, ``kernel``).
    :param float max_divergence_fraction: the share of diverged chain-steps that is a failure.
    """

    def __init__(self, learner, max_divergence_fraction, device, dist=None):
        self.learner, self.device, self.dist = learner, device, dist
        self.max_divergence_fraction = max_divergence_fraction
        self.snapshot = None
        self._zero()

    def _zero(self):
        zero = torch.zeros((), device=self.device)
        self.flags = {"bad": zero.clone(), "bad_update": zero.clone(), "diverged": zero.clone(),
                      "chain_steps": 0, "mismatch": zero.clone()}

    def begin(self):
        """Keep the state the chunk starts from (copies on the device)."""
        self.snapshot = {
            "learner": self.learner.snapshot(),
            "iteration": self.learner.iteration,
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
            self.flags["chain_steps"] += (result.run.divergences.numel()
                                          * self.learner.kernel.num_steps)
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
        return self.max_divergence_fraction * chain_steps

    def _problem(self, rows, failed):
        for rank, (_, diverged, chain_steps, *_) in enumerate(rows):
            if not failed(rows[rank]):
                continue
            if diverged > self._limit(chain_steps):
                problem = (f"Langevin inference diverged in {int(diverged)} of "
                           f"{int(chain_steps)} chain-steps before iteration "
                           f"{self.learner.iteration} (step size "
                           f"{self.learner.kernel.step_size}); lower langevin.step_size — "
                           "rolled back, the last checkpoint is intact")
            else:
                problem = (f"a non-finite loss, code or gradient before iteration "
                           f"{self.learner.iteration}; rolled back to iteration "
                           f"{self.snapshot['iteration']}, the last checkpoint is intact")
            return f"rank {rank}: {problem}" if self.dist is not None else problem
        return None

    def rollback(self):
        """Restore the state the chunk started from."""
        s = self.snapshot
        self.learner.restore(s["learner"])
        torch.set_rng_state(s["torch"])
        if s["cuda"] is not None:
            torch.cuda.set_rng_state_all(s["cuda"])

    def redo_through_trace(self):
        """Roll back a chunk whose kernel's traced transition disagreed with the model's trace,
        and have the kernel follow the trace from now on."""
        self.rollback()
        self.learner.kernel.graph_went_stale()


# ------------------------------------------------------------------------------------------
def run_epochs(model, config, train_data, step, end_epoch, save, *, progress_state, fresh_sums,
               bar, device, stop_after=None, rank=0, world=1, dist=None, transaction=None):
    """The epoch loop of every learner.

    Resumes at ``progress_state`` (``epoch``, ``batch_in_epoch``, ``epoch_sums``); per batch
    ``step(x) -> {sum: increment}`` (numbers or device tensors); after an epoch
    ``end_epoch(epoch, sums) -> postfix`` and ``save(epoch + 1, 0, fresh sums)``; on Ctrl-C (any
    rank's, under torch.distributed) ``save(epoch, next batch, sums)`` and stop.

    With a ``transaction`` (:class:`RollbackTransaction`) the batches run in chunks of up to
    :data:`READ_EVERY` that end with one read of the steps' checks (and Ctrl-C is looked at
    there, or at once in a single process); a bad chunk rolls back and stops with
    :class:`~pyro_sparsegen.TrainingError`, a chunk whose traced transition went stale is
    rolled back and redone through the model's trace. Without one (the baselines, which check
    in their own steps) Ctrl-C is looked at after every batch.

    :return: ``(epochs done, interrupted)``
    """
    epoch = progress_state["epoch"]
    start_batch = progress_state.get("batch_in_epoch", 0)
    sums = dict(progress_state.get("epoch_sums") or fresh_sums)
    last_epoch = config.optim.epochs if stop_after is None else min(stop_after,
                                                                      config.optim.epochs)
    every = READ_EVERY if transaction is not None else 1
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
                sums, stop = _run_chunk(pending, step, sums, transaction, interrupt, dist,
                                        device, bar)
                pending = []
                if stop:
                    sums["seconds"] += time.perf_counter() - tick
                    save(epoch, b + 1, sums)
                    return epoch, True
            if pending:
                sums, stop = _run_chunk(pending, step, sums, transaction, interrupt, dist,
                                        device, bar)
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


def _run_chunk(batches, step, sums, transaction, interrupt, dist, device, bar):
    """Run ``batches`` through ``step`` as one chunk: ``(sums, stop requested)``."""
    if transaction is None:  # the caller's steps check themselves: Ctrl-C after every batch
        for x in batches:
            for key, value in step(x).items():
                sums[key] += value
            bar.update(1)
        return sums, any_rank(interrupt.requested, dist, device)
    for attempt in range(2):
        transaction.begin()
        new = dict(sums)
        for x in batches:
            for key, value in step(x).items():
                new[key] = new[key] + value
        problem, stale, stop = transaction.read(interrupt.requested)
        if problem is not None:
            transaction.rollback()
            if dist is not None:
                dist.barrier()  # every rank leaves together (see stop_everywhere)
            raise TrainingError(problem)
        if not stale or attempt:
            bar.update(len(batches))
            return new, stop
        transaction.redo_through_trace()
    raise AssertionError("unreachable")


def _to_host(sums):
    return {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in sums.items()}


# ------------------------------------------------------------------------------------------
class Run:
    """One run folder being trained, the skeleton every learner shares: where (``device``;
    under torch.distributed ``LOCAL_RANK``'s GPU), on what (the splits), the model (fresh or
    resumed from the folder's checkpoint), the checkpoint written after every epoch and on
    Ctrl-C, ``metrics.csv``, the collapse watch and the figures.

    :param TrainConfig config: the run's settings (``saved_config`` is what checkpoints
        record; a caller may replace it, e.g. an early-stopped run's length).
    :param hold_out: ``train data -> (train data, validation data)``: images held out of
        training (as :attr:`validation_data`), before the run's length in batches is counted.
    :param param_store: save Pyro's param store with the model (a learner whose parameters
        live there).
    :param watch_collapse: keep the collapse watch (:class:`~pyro_sparsegen.monitor.CollapseWatch`)
        when ``config.optim.stop_on_collapse`` and the model has a schedule.
    :param on_checkpoint: called with the checkpoint path after every save.
    """

    FRESH_SUMS = {"mse": 0.0, "loss": 0.0, "images": 0, "seconds": 0.0}

    def __init__(self, config: TrainConfig, out_dir, *, train_data=None, test_data=None,
                 hold_out=None, param_store=True, watch_collapse=True, on_checkpoint=None):
        self.config = self.saved_config = config
        self.dist, self.rank, self.world = distributed_context()
        device = resolve_device(config.device, error=ConfigError)
        if self.dist is not None and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", self.rank)))
            torch.cuda.set_device(device)
        self.device = device
        self.train_data, self.test_data = builders.load_splits(config, train_data, test_data)
        #: the held-out validation split (``None`` without one)
        self.validation_data = None
        if hold_out is not None:
            self.train_data, self.validation_data = hold_out(self.train_data)
        self.out_dir = os.fspath(out_dir)
        self.path = os.path.join(self.out_dir, ckpt.CHECKPOINT)
        per_rank = math.ceil(len(self.train_data) / self.world)
        self.iterations_per_epoch = math.ceil(per_rank / config.optim.batch_size)
        self.param_store, self.on_checkpoint = param_store, on_checkpoint
        self.watch_collapse = watch_collapse
        self.extra = {}
        self.state = self.model = self.watch = self.lock = None
        self.progress, self.metrics = {"epoch": 0, "iteration": 0, "batch_in_epoch": 0}, []

    def close(self):
        """Release the run folder's lock (rank 0 holds it from :meth:`start` on)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def start(self, resume, build, rebuild):
        """The model: ``rebuild(checkpoint, device)`` of the folder's checkpoint (checked to
        fit this run, :func:`~pyro_sparsegen.builders.check_resumable`) with its progress and
        metrics, or ``build()`` in a fresh (writable) folder from the seeded RNG (the same
        initial weights on every rank; each rank then draws from its own stream).

        Rank 0 first takes the folder's lock (:class:`~pyro_sparsegen.files.FolderLock`: one
        writer per run folder, for the whole job; :meth:`close` releases it): a folder that
        another live process writes is refused in one line."""
        if self.rank == 0:
            if not resume:
                output_folder(self.out_dir, error=ConfigError)
            if os.path.isdir(self.out_dir):
                self.lock = FolderLock.acquire(self.out_dir)
        if resume:
            self.state = ckpt.load(self.path)
            builders.check_resumable(self.state, self.config, self.train_data.image_shape,
                                     self.world)
            self.model = rebuild(self.state, self.device)
            self.progress, self.metrics = self.state.progress, self.state.metrics
        else:
            seed_everything(self.config.seed)
            model = build()
            self.model = model.to(self.device) if isinstance(model, torch.nn.Module) else model
            if self.world > 1:
                torch.manual_seed(rank_seed(self.config.seed, self.rank))
        schedule = getattr(self.model, "schedule", None)
        self.watch = CollapseWatch(
            schedule.end if schedule is not None and self.config.optim.stop_on_collapse
            and self.watch_collapse else None, self.progress.get("collapse_watch"))
        return self.model

    def restore(self, learner):
        """On resume: the learner's optimiser states and this rank's RNG streams."""
        if self.state is None:
            return
        if self.state.optimizer_states is None:
            raise ckpt.CheckpointError(f"{self.path}: written by format version "
                                       f"{self.state.format_version}, which cannot be resumed "
                                       "(load it for inference, or train anew)")
        learner.load_state_dict(self.state.optimizer_states)
        ranks = self.state.rng_ranks
        restore_rng(ranks[self.rank] if self.rank < len(ranks) else self.state.rng)

    def save(self, learner, epoch, batch_in_epoch, epoch_sums):
        """Write the checkpoint (rank 0; every rank's RNG streams), and ``best.h5`` when this
        epoch is the collapse watch's best; every rank returns once the file is in place."""
        rng = gather(rng_states(), self.dist)  # every rank's streams, to rank 0
        problem = None
        if self.rank == 0:
            prog = {"epoch": epoch, "iteration": learner.iteration,
                    "batch_in_epoch": batch_in_epoch, "epoch_sums": _to_host(epoch_sums),
                    "world_size": self.world, "collapse_watch": self.watch.state}
            try:
                ckpt.save(self.path, model=self.model, config=self.saved_config.to_dict(),
                          optimizer=learner.state_dict(),
                          params=ckpt.store_params(self.model) if self.param_store else None,
                          progress=prog, metrics=self.metrics, extra=self.extra, rng=rng)
                if batch_in_epoch == 0 and self.watch.state.get("best_epoch") == epoch:
                    with atomic_file(os.path.join(self.out_dir, ckpt.BEST)) as tmp:
                        shutil.copyfile(self.path, tmp)
            except OSError as e:
                if self.dist is None:
                    raise
                problem = f"cannot write {self.path} ({e})"
            if self.on_checkpoint is not None and problem is None:
                self.on_checkpoint(self.path)
        # also the barrier: when any rank goes on (e.g. to resume), the file is in place
        stop_everywhere(problem, self.dist, self.device, error=TrainingError)

    def record(self, learner, encoder, epoch, epoch_sums, extra=None):
        """The epoch's ``metrics.csv`` row (:func:`~pyro_sparsegen.monitor.epoch_row`),
        appended and written; a failed evaluation or a collapse stops every rank."""
        row, problem = None, None
        try:
            row = epoch_row(self.model, encoder, self.config, self.test_data, self.device, epoch,
                            _to_host(epoch_sums), extra, iteration=learner.iteration)
        except TrainingError as e:
            problem = str(e)
        stop_everywhere(problem, self.dist, self.device, error=TrainingError)
        self.metrics.append(row)
        if self.rank == 0:
            rewrite_csv(os.path.join(self.out_dir, ckpt.METRICS), self.metrics)
        # no checkpoint of a collapsed epoch
        stop_everywhere(self.watch.update(row), self.dist, self.device, error=TrainingError)
        return row

    def epochs(self, learner, end_epoch, *, progress_state=None, until=None, progress=True,
               desc="train"):
        """:func:`run_epochs` of ``learner`` from ``progress_state`` (default: where the run
        is) until epoch ``until`` (default: the end), with a progress bar."""
        config = self.config
        bar = tqdm(total=config.optim.epochs * self.iterations_per_epoch,
                   initial=learner.iteration, disable=not progress or self.rank != 0, desc=desc,
                   unit="batch", dynamic_ncols=True)
        return run_epochs(
            self.model, config, self.train_data, learner.step, end_epoch,
            lambda epoch, batch, sums: self.save(learner, epoch, batch, sums),
            progress_state=self.progress if progress_state is None else progress_state,
            fresh_sums=self.FRESH_SUMS, bar=bar, device=self.device, stop_after=until,
            rank=self.rank, world=self.world, dist=self.dist,
            transaction=learner.transaction)

    def finish(self, epoch, interrupted, figures=None, encoder=None):
        """The figures (``figures(model, encoder, test data, metrics, folder, config,
        device)``, rank 0, once every epoch is done) and the :class:`TrainResult`."""
        done = epoch >= self.saved_config.optim.epochs
        if figures is not None and self.rank == 0 and not interrupted and done:
            figures(self.model, encoder, self.test_data, self.metrics, self.out_dir,
                    self.saved_config, self.device)
        return TrainResult(self.model, self.metrics, self.path, interrupted)
