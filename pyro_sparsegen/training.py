"""Training the package's model: :func:`train` runs :class:`~pyro_sparsegen.ABP` over epochs
of a data set in the shared loop (:class:`~pyro_sparsegen.loop.Run`: atomic checkpoints,
metrics, figures, Ctrl-C, resume and torch.distributed), its steps checked on the device and
rolled back by a :class:`~pyro_sparsegen.loop.RollbackTransaction`.

The run's pieces come from :mod:`pyro_sparsegen.builders`, the held-out figures and the
collapse watch from :mod:`pyro_sparsegen.monitor`, the run's figures from
:mod:`pyro_sparsegen.figures`.
"""


import pyro

from . import builders
from .abp import ABP, TrainingError
from .config import TrainConfig, default_dtype
from .encoding import CodeInference
from .figures import write_figures
from .loop import RollbackTransaction, Run, TrainResult
from .metrics import per_image_mse

__all__ = ["ABPLearner", "TrainResult", "TrainingError", "train"]


class ABPLearner:
    """:class:`~pyro_sparsegen.ABP` as the loop's :class:`~pyro_sparsegen.loop.Learner`: its
    device-side steps report their checks to a :class:`~pyro_sparsegen.loop.RollbackTransaction`,
    its optimiser states are keyed by parameter name.

    :param abp: the :class:`~pyro_sparsegen.ABP`.
    :param first: one batch of images (``[1, C, H, W]`` is enough): the model is run on it
        once (under a forked RNG) so that it registers every parameter, a function model's too.
    """

    def __init__(self, abp, first, config: TrainConfig, device, dist=None):
        self.abp, self.model = abp, abp.model
        self.params = abp.parameters(first)
        self.transaction = RollbackTransaction(abp, config.langevin.max_divergence_fraction,
                                               device, dist)

    @property
    def iteration(self):
        return self.abp.iteration

    def step(self, x):
        """One :meth:`~pyro_sparsegen.ABP.device_step`: its sums (loss and MSE summed over
        the batch, device tensors) and its checks folded into the transaction."""
        result = self.abp.device_step(x)
        self.transaction.add(result)
        out = {"loss": result.loss * x.shape[0], "images": x.shape[0]}
        if "x" in result.reconstruction:
            mean, observed = result.reconstruction["x"]
            out["mse"] = per_image_mse(mean, observed).sum()
        return out

    def state_dict(self):
        """``{parameter name: torch optimiser state dict}``."""
        return self.abp.optimizer_state()

    def load_state_dict(self, states):
        self.abp.load_optimizer_state(states, self.params)


def train(config: TrainConfig, out_dir, *, resume=False, model_class=None, train_data=None,
          test_data=None, progress=True, figures=True, on_checkpoint=None, stop_after=None,
          trust_model=False):
    """Train a generator by ABP and write ``out_dir/checkpoint.h5``, ``metrics.csv`` and
    figures. Resumes exactly from the checkpoint with ``resume=True``.

    The model is a :class:`~pyro_sparsegen.SparseGenerator` built from the config (or
    ``model_class``, a subclass), or any Pyro model a factory ``config.model`` builds (see
    :func:`~pyro_sparsegen.builders.build_model`); the run has a scope of Pyro's param store
    of its own, and leaves the learned parameters in the param store on return. Under
    torch.distributed every rank draws its own Langevin noise (torch seeded with
    :func:`~pyro_sparsegen.runtime.rank_seed`), the gradients of every parameter are averaged
    across ranks, the checkpoint keeps every rank's RNG states, and a run resumes only with
    the number of processes it was written with.

    :param TrainConfig config: every setting.
    :param model_class: a :class:`~pyro_sparsegen.SparseGenerator` subclass (a variant prior);
        on resume the checkpoint's recorded class is used, and passing it here is the opt-in
        to use a class from outside this package (see :func:`~pyro_sparsegen.load_run`).
    :param trust_model: on resume, import the recorded class or factory whatever module it
        is in (passing the same ``config.model`` is the opt-in for a factory).
    :param train_data: an :class:`~pyro_sparsegen.data.ImageData` (default: ``config.data``).
    :param on_checkpoint: called with the checkpoint path after every save (tests use it).
    :param stop_after: stop (checkpointed, resumable) once this many epochs are done, without
        changing the run's length and hence its schedule.
    :return: :class:`~pyro_sparsegen.loop.TrainResult`
    """
    config.validate()
    with default_dtype(config.dtype), \
            pyro.get_param_store().scope() as scope:  # no parameter of an earlier run leaks in
        result = _train(config, out_dir, resume, model_class, train_data, test_data, progress,
                        figures, on_checkpoint, stop_after, trust_model)
    pyro.get_param_store().set_state(scope)  # the learned values, for pyro.param(name)
    return result


def _train(config, out_dir, resume, model_class, train_data, test_data, progress, figures,
           on_checkpoint, stop_after, trust_model):
    run = Run(config, out_dir, train_data=train_data, test_data=test_data,
              on_checkpoint=on_checkpoint)
    try:  # the run folder's lock is released however the run ends
        return _train_run(run, config, resume, model_class, progress, figures, stop_after,
                          trust_model)
    finally:
        run.close()


def _train_run(run, config, resume, model_class, progress, figures, stop_after, trust_model):
    model = run.start(
        resume,
        build=lambda: builders.build_model(config, run.train_data.image_shape,
                                           run.iterations_per_epoch, model_class, run.device),
        rebuild=lambda state, device: builders.rebuild_model(
            state, device, trust_model=trust_model, model_class=model_class,
            factory=config.model))
    done = run.progress.get("iteration", 0)
    kernel = builders.make_kernel(model, config,
                                  config.optim.epochs * run.iterations_per_epoch - done)
    abp = ABP(model, kernel, builders.make_optim(config, run.device),
              num_data=len(run.train_data), sparsify=config.langevin.sparsify, iteration=done)
    learner = ABPLearner(abp, run.train_data.batch([0]).to(run.device), config, run.device,
                         run.dist)
    run.restore(learner)
    encoder = CodeInference(model, kernel, config.langevin.sparsify)

    def end_epoch(epoch, sums):
        row = run.record(learner, encoder, epoch, sums)
        return {"mse": f"{row['test_mse']:.4f}", "zeroed": f"{row['zeroed_mse']:.4f}",
                "inactive": f"{row['inactive_fraction_threshold']:.2f}",
                "w": f"{row['slab_weight']:.3g}"}

    epoch, interrupted = run.epochs(learner, end_epoch, until=stop_after, progress=progress)
    return run.finish(epoch, interrupted, write_figures if figures else None, encoder)


# -- the names of the previous layout ---------------------------------------------------------
_MOVED = {
    "resolve_device": "runtime", "seed_everything": "runtime", "rank_seed": "runtime",
    "distributed_context": "runtime", "gather": "runtime", "stop_everywhere": "runtime",
    "InterruptGuard": "runtime",
    "load_splits": "builders", "build_network": "builders", "import_factory": "builders",
    "build_model": "builders", "make_kernel": "builders", "make_optim": "builders",
    "check_resumable": "builders", "load_run": "builders", "read_run": "builders",
    "inclusion_mask": "metrics", "active_mask": "metrics",
    "evaluate": "monitor", "epoch_row": "monitor", "rewrite_csv": "monitor",
    "CollapseWatch": "monitor", "CollapseWarning": "monitor",
    "run_epochs": "loop", "READ_EVERY": "loop",
    "CHECKPOINT": "checkpoint", "BEST": "checkpoint", "METRICS": "checkpoint",
    "reconstructions": "figures", "write_figures": "figures",
}


def __getattr__(name):
    """The names that moved out of this module, as deprecated aliases for one release."""
    from .errors import moved

    aliases = {k: (f"{__package__}.{home}", k) for k, home in _MOVED.items()}
    aliases.update(Encoder=(f"{__package__}.encoding", "CodeInference"),
                   make_encoder=(f"{__package__}.encoding", "make_inference"))
    value = moved(__name__, name, aliases)
    if name == "resolve_device":  # this module's raised ConfigError
        import functools

        from .config import ConfigError

        value = functools.partial(value, error=ConfigError)
    return value
