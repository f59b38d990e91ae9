"""Training loop of the amortised baselines: stochastic variational inference on the model's
own loss (``model.loss()``), encoder and generator together, one Adam step per mini-batch.

Trained in the loop ABP trains in (:class:`~pyro_sparsegen.loop.Run`, through the
:class:`SVILearner`), so a run writes the same run folder as :func:`pyro_sparsegen.train`:
``checkpoint.h5`` (same format; :func:`~pyro_sparsegen.load_run` rebuilds the baseline),
``metrics.csv`` with the ABP loop's columns, and the same figures. Resumes exactly with
``resume=True``.

By default a run has ``config.optim.epochs`` epochs. With ``early_stopping`` (an
:class:`EarlyStopping`) it is as long as the ELBO on a validation split carved from the
*training* images keeps improving: at least ``config.optim.epochs`` epochs, at most
``max_epochs``; at the first plateau (``patience`` epochs without improvement) the learning
rate drops by ``lr_drop``, at the second the run stops. :func:`recommended` gives the
baselines' own recommended settings (what a fair comparison trains them with).
"""

import dataclasses
import math

import numpy as np
import torch

from .. import builders
from ..abp import TrainingError
from ..config import ConfigError, LangevinConfig, PriorConfig, TrainConfig, likelihood_scale
from ..encoding import CodeInference
from ..loop import Run
from ..runtime import distributed, forked_rng
from ..figures import write_figures
from .vae import BetaVAE
from .vsc import VSC

KINDS = ("beta_vae", "vsc")
MODEL_CLASSES = {"beta_vae": BetaVAE, "vsc": VSC}


@dataclasses.dataclass
class EarlyStopping:
    """Train while the validation ELBO improves (see the module docstring).

    :ivar int max_epochs: the cap (the run has at least ``config.optim.epochs``).
    :ivar int patience: epochs without an improvement that make a plateau.
    :ivar float lr_drop: factor of the learning rate at the first plateau.
    :ivar float validation_fraction: share of the training images held out for the ELBO (a
        seeded random subset; the model trains on the rest).
    :ivar float min_delta: relative improvement of the validation loss that counts.
    """

    max_epochs: int = 200
    patience: int = 3
    lr_drop: float = 0.1
    validation_fraction: float = 0.1
    min_delta: float = 1e-4

    def validate(self):
        for name in ("max_epochs", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"early_stopping.{name} must be a positive integer, "
                                  f"got {value!r}")
        for name, low, high in (("lr_drop", 0, 1), ("validation_fraction", 0, 1),
                                ("min_delta", 0, 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not (low < value < high or (name == "min_delta" and value == 0)):
                raise ConfigError(f"early_stopping.{name} must lie in ({low}, {high}), "
                                  f"got {value!r}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


def recommended(kind, config: TrainConfig, *, max_epochs=200):
    """The baselines' own recommended training: ``(config, early_stopping, options)``.

    - Adam with lr 1e-3 and the default betas (0.9, 0.999) (the ABP settings, lr 0.01 and
      beta1 0.5, are ABP's and under-train an amortised model);
    - as many epochs as the validation ELBO keeps improving, at least ``config.optim.epochs``
      (the ABP models' count), at most ``max_epochs``, with one learning-rate drop (x 0.1) at
      the first plateau (:class:`EarlyStopping`);
    - VSC as in Tonolini et al. (UAI 2019): alpha = 0.01, the gate sharpness c warmed up
      linearly from 50 to 200 over the first ``config.optim.epochs`` epochs, the slab's
      lambda warm-up over their first 10 %; the beta-VAE with beta = 1;
    - their standard decoder: no column-norm constraint (``network.input_norm = None``);
    - the default ``prior`` and ``langevin`` sections: an amortised model uses neither, so a
      sparse recipe under test (``analyses/run_all.py --config``) does not change its run.

    ``config`` itself is left unchanged.
    """
    _model_class(kind)
    out = TrainConfig.from_dict(config.to_dict())
    out.optim.lr, out.optim.beta1, out.optim.beta2 = 1e-3, 0.9, 0.999
    out.network.input_norm = None
    out.prior, out.langevin = PriorConfig(), LangevinConfig()
    options = {"beta": 1.0} if kind == "beta_vae" else {"alpha": 0.01, "c_start": 50.0,
                                                        "c_end": 200.0}
    stopping = EarlyStopping(max_epochs=max(int(max_epochs), out.optim.epochs))
    return out.validate(), stopping.validate(), options


def split_validation(data, fraction, seed):
    """``(train, validation)`` views of ``data``: a seeded random ``fraction`` of the images
    (at least one) is held out."""
    n = len(data)
    k = min(max(1, int(round(fraction * n))), n - 1)
    if n < 2:
        raise ConfigError("early stopping needs at least two training images")
    held = np.sort(np.random.default_rng([int(seed), 7]).permutation(n)[:k])
    keep = np.setdiff1d(np.arange(n), held)
    return data.subset(keep), data.subset(held)


def plateau(losses, min_epochs, stopping):
    """``(learning-rate drops so far, stop)`` after the validation losses ``losses`` of the
    epochs done: a plateau is ``patience`` epochs without a relative improvement of
    ``min_delta``, counted from the last improvement or drop, and only from epoch
    ``min_epochs`` on; the first plateau drops the rate, the second stops."""
    best, since, drops = float("inf"), 0, 0
    for epoch, loss in enumerate(losses, 1):
        if loss < best - stopping.min_delta * abs(best if math.isfinite(best) else 0.0):
            best, since = loss, 0
        else:
            since += 1
        if since >= stopping.patience and epoch >= min_epochs:
            if drops:
                return drops, True
            drops, since = 1, 0
    return drops, False


@torch.no_grad()
def validation_loss(model, loss_fn, data, batch_size, device, seed):
    """``-ELBO`` per image on ``data`` (moved to ``device``, where ``model`` is), with the
    ELBO's draws seeded by ``seed`` (the same draws every epoch, and the training RNG streams
    untouched)."""
    total = 0.0
    with forked_rng(model):
        torch.manual_seed(seed)
        for _, x in data.batches(batch_size):
            total += loss_fn(model, model.guide, x.to(device)).item()
    return total / max(len(data), 1)


def _model_class(kind):
    if kind not in MODEL_CLASSES:
        raise ConfigError(f"baseline kind must be one of {KINDS}, got {kind!r}")
    return MODEL_CLASSES[kind]


def build_baseline(kind, config: TrainConfig, image_shape, total_iterations, **options):
    """A fresh baseline of ``kind`` with the config's generator network, noise scale and
    likelihood. VSC's warm-up (default: the first 10 % of the run) and gate-sharpness
    annealing (default: the whole run) are sized to ``total_iterations``."""
    cls = _model_class(kind)
    if cls is VSC:
        options.setdefault("warmup_iterations", int(0.1 * total_iterations))
        options.setdefault("anneal_iterations", max(1, int(total_iterations)))
    network = builders.build_network(config, image_shape)
    try:
        return cls(network, noise_scale=likelihood_scale(config.network.noise_scale,
                                                          image_shape),
                   likelihood=config.network.likelihood, **options)
    except TypeError as e:
        raise ConfigError(f"{kind}: {e}") from None


def _check_options(model, kind, options):
    stored = model.checkpoint_options()
    for name, value in options.items():
        if name not in stored:
            raise ConfigError(f"{kind}: unknown option {name!r}")
        saved = stored[name]
        same = list(value) == list(saved) if isinstance(saved, list) else value == saved
        if not same:
            raise ConfigError(f"resume: the checkpoint has {name}={saved!r}, not {value!r}")


class SVILearner:
    """An amortised baseline trained by SVI, as the loop's :class:`~pyro_sparsegen.loop.Learner`:
    one Adam step per mini-batch on the model's own loss (``model.loss()``), encoder and
    generator together; its steps check themselves (a non-finite loss raises
    :class:`~pyro_sparsegen.TrainingError` before any update)."""

    transaction = None

    def __init__(self, model, config: TrainConfig):
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr,
                                          betas=(config.optim.beta1, config.optim.beta2))
        self.loss_fn = model.loss()

    @property
    def iteration(self):
        return self.model.iteration

    def step(self, x):
        """One SVI step on the images ``x``: ``-ELBO`` and the codes' MSE summed over them."""
        model = self.model
        with torch.no_grad():
            mse = ((model.network(model.encode(x)) - x) ** 2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(model, model.guide, x) / x.shape[0]
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite training loss ({loss.item()}) at iteration "
                                f"{model.iteration}; weights were not updated")
        loss.backward()
        self.optimizer.step()
        model.iteration += 1
        n = x.shape[0]
        return {"loss": loss.item() * n, "mse": mse.item() * n, "images": n}

    def state_dict(self):
        """``{"optimizer": the Adam state dict}``."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, states):
        self.optimizer.load_state_dict(states["optimizer"])


def train_baseline(kind, config: TrainConfig, out_dir, *, train_data=None, test_data=None,
                   progress=True, figures=True, stop_after=None, resume=False,
                   early_stopping=None, validation_data=None, **options):
    """Train a β-VAE (``kind="beta_vae"``) or VSC (``"vsc"``) baseline by SVI.

    :param TrainConfig config: data, network (type, latent size, widths, noise scale,
        likelihood), optimizer (Adam lr and betas, batch size, epochs), seed, device and
        threshold are used; the prior and Langevin sections are not.
    :param out_dir: the run folder (``checkpoint.h5``, ``metrics.csv``, figures).
    :param train_data: an :class:`~pyro_sparsegen.data.ImageData` (default: ``config.data``).
    :param stop_after: stop (checkpointed, resumable) after this many epochs without changing
        the run's length and hence its schedules.
    :param resume: continue the run in ``out_dir`` exactly where its checkpoint stopped.
    :param early_stopping: an :class:`EarlyStopping` (or its dict): train while the
        validation ELBO improves, at least ``config.optim.epochs`` epochs. The checkpoint of a
        stopped run records the epochs it had as ``config.optim.epochs`` and the stopping
        settings and outcome in ``extra["early_stopping"]``. ``None``: exactly
        ``config.optim.epochs`` epochs.
    :param validation_data: the validation images for ``early_stopping`` (default: a seeded
        ``validation_fraction`` of ``train_data``, which the model then does not train on).
    :param options: the model's own options (``beta``, ``encoder_hidden`` for the β-VAE;
        ``alpha``, ``c_start``, ``c_end``, ``warmup_iterations``, ... for VSC).
    :return: :class:`~pyro_sparsegen.loop.TrainResult`
    """
    cls = _model_class(kind)
    config.validate()
    stopping = _stopping(early_stopping)
    if distributed() is not None:
        raise ConfigError("the SVI baselines train in one process; run them without torchrun")
    min_epochs = config.optim.epochs
    run_config, hold_out = config, None
    if stopping is not None:
        run_config = TrainConfig.from_dict(config.to_dict())
        run_config.optim.epochs = max(stopping.max_epochs, min_epochs)
        if validation_data is None:
            def hold_out(data):
                return split_validation(data, stopping.validation_fraction, config.seed)
    run = Run(run_config, out_dir, train_data=train_data, test_data=test_data,
              hold_out=hold_out, param_store=False, watch_collapse=False)
    validation_data = run.validation_data if validation_data is None else validation_data
    run.extra = extra = {"baseline": kind}
    if stopping is not None:
        extra["early_stopping"] = {**stopping.to_dict(), "min_epochs": min_epochs}

    def rebuild(state, device):
        model = builders.rebuild_model(state, device)
        if type(model) is not cls:
            raise ConfigError(f"{run.path} holds a {type(model).__name__}, not a {cls.__name__}")
        _check_options(model, kind, options)
        saved = {k: v for k, v in state.extra.get("early_stopping", {}).items()
                 if k not in ("stopped", "epochs")}
        if saved != extra.get("early_stopping", {}):
            raise ConfigError(f"resume: the checkpoint was trained with early_stopping="
                              f"{saved or None}, not {extra.get('early_stopping')}")
        return model

    try:  # the run folder's lock is released however the run ends
        model = run.start(resume, rebuild=rebuild, build=lambda: build_baseline(
            kind, config, run.train_data.image_shape, run.iterations_per_epoch * min_epochs,
            **options))
        learner = SVILearner(model, config)
        run.restore(learner)
        encoder = CodeInference(model, None)

        def end_epoch(epoch, sums):
            columns = {"train_loss": sums["loss"] / max(sums["images"], 1)}
            if stopping is not None:
                columns["val_loss"] = validation_loss(model, learner.loss_fn, validation_data,
                                                      config.optim.batch_size, run.device,
                                                      config.seed)
                columns["lr"] = learner.optimizer.param_groups[0]["lr"]
            row = run.record(learner, encoder, epoch, sums,
                             extra={**columns, **model.annealing_state()})
            return {"loss": f"{row['train_loss']:.1f}", "mse": f"{row['test_mse']:.4f}",
                    "inactive": f"{row['inactive_fraction_threshold']:.2f}"}

        def epochs(progress_state, until):
            return run.epochs(learner, end_epoch, progress_state=progress_state, until=until,
                              progress=progress, desc=kind)

        if stopping is None:
            epoch, interrupted = epochs(run.progress, stop_after)
        else:
            epoch, interrupted = _train_until_plateau(
                epochs, run.progress, run.metrics, learner.optimizer, config, stopping, stop_after)
            if not interrupted and (stop_after is None or epoch < stop_after):
                # finished: the checkpoint records the epochs the run had
                run.saved_config = TrainConfig.from_dict(config.to_dict())
                run.saved_config.optim.epochs = epoch
                extra["early_stopping"].update(epochs=epoch,
                                               stopped=epoch < run_config.optim.epochs)
                run.save(learner, epoch, 0, dict(run.FRESH_SUMS))
        return run.finish(epoch, interrupted, write_figures if figures else None, encoder)
    finally:
        run.close()


def _stopping(early_stopping):
    if early_stopping is None or isinstance(early_stopping, EarlyStopping):
        return None if early_stopping is None else early_stopping.validate()
    if isinstance(early_stopping, dict):
        try:
            return EarlyStopping(**early_stopping).validate()
        except TypeError as e:
            raise ConfigError(f"early_stopping: {e}") from None
    raise ConfigError(f"early_stopping must be an EarlyStopping, a dict or None, "
                      f"got {type(early_stopping).__name__}")


def _train_until_plateau(epochs, progress_state, metrics, optimizer, config, stopping,
                         stop_after):
    """One epoch at a time until :func:`plateau` says stop (or the cap, or ``stop_after``);
    the learning rate of each epoch follows from the validation losses so far, so a resumed
    run continues with the same rates."""
    epoch = progress_state["epoch"]
    cap = max(stopping.max_epochs, config.optim.epochs)
    while True:
        drops, stop = plateau([row["val_loss"] for row in metrics], config.optim.epochs,
                              stopping)
        for group in optimizer.param_groups:
            group["lr"] = config.optim.lr * stopping.lr_drop ** drops
        if stop or epoch >= cap or (stop_after is not None and epoch >= stop_after):
            return epoch, False
        epoch, interrupted = epochs(progress_state, epoch + 1)
        if interrupted:
            return epoch, True
        progress_state = {"epoch": epoch, "batch_in_epoch": 0}
