"""Training loop of the amortised baselines: stochastic variational inference on the model's
own loss (``model.loss()``), encoder and generator together, one Adam step per mini-batch.

Writes the same run folder as :func:`pyro_sparsegen.training.train`: ``checkpoint.h5`` (same
format; :func:`~pyro_sparsegen.training.load_run` rebuilds the baseline), ``metrics.csv`` with
the ABP loop's columns, and the same figures. Resumes exactly with ``resume=True``.
"""

import math
import os

import torch
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from .. import training
from ..config import ConfigError, TrainConfig
from .vae import BetaVAE
from .vsc import VSC

KINDS = ("beta_vae", "vsc")
MODEL_CLASSES = {"beta_vae": BetaVAE, "vsc": VSC}


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
    network = training.build_network(config, image_shape)
    try:
        return cls(network, noise_scale=config.network.noise_scale,
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


def _step(model, loss_fn, optimizer, x):
    """One SVI step on the images ``x``; returns ``(-ELBO per image, MSE of the codes)``."""
    with torch.no_grad():
        mse = ((model.network(model.encode(x)) - x) ** 2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, model.guide, x) / x.shape[0]
    if not torch.isfinite(loss):
        raise training.TrainingError(f"non-finite training loss ({loss.item()}) at iteration "
                                     f"{model.iteration}; weights were not updated")
    loss.backward()
    optimizer.step()
    model.iteration += 1
    return loss.item(), mse.item()


def train_baseline(kind, config: TrainConfig, out_dir, *, train_data=None, test_data=None,
                   progress=True, figures=True, stop_after=None, resume=False, **options):
    """Train a β-VAE (``kind="beta_vae"``) or VSC (``"vsc"``) baseline by SVI.

    :param TrainConfig config: data, network (type, latent size, widths, noise scale,
        likelihood), optimizer (Adam lr and betas, batch size, epochs), seed, device and
        threshold are used; the prior and Langevin sections are not.
    :param out_dir: the run folder (``checkpoint.h5``, ``metrics.csv``, figures).
    :param train_data: an :class:`~pyro_sparsegen.data.ImageData` (default: ``config.data``).
    :param stop_after: stop (checkpointed, resumable) after this many epochs without changing
        the run's length and hence its schedules.
    :param resume: continue the run in ``out_dir`` exactly where its checkpoint stopped.
    :param options: the model's own options (``beta``, ``encoder_hidden`` for the β-VAE;
        ``alpha``, ``c_start``, ``c_end``, ``warmup_iterations``, ... for VSC).
    :return: :class:`~pyro_sparsegen.training.TrainResult`
    """
    cls = _model_class(kind)
    config.validate()
    if training.distributed_context()[0] is not None:
        raise ConfigError("the SVI baselines train in one process; run them without torchrun")
    device = training.resolve_device(config.device)
    train_data, test_data = training.load_splits(config, train_data, test_data)
    out_dir = os.fspath(out_dir)
    path = os.path.join(out_dir, training.CHECKPOINT)
    iterations_per_epoch = math.ceil(len(train_data) / config.optim.batch_size)

    if resume:
        state = ckpt.load(path)
        training.check_resumable(state, config, train_data.image_shape)
        model = state.build_model(device)
        if type(model) is not cls:
            raise ConfigError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        _check_options(model, kind, options)
        progress_state, metrics = state.progress, state.metrics
    else:
        os.makedirs(out_dir, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise ConfigError(f"{out_dir}: output folder is not writable")
        training.seed_everything(config.seed)
        model = build_baseline(kind, config, train_data.image_shape,
                               iterations_per_epoch * config.optim.epochs, **options).to(device)
        progress_state, metrics = {"epoch": 0, "iteration": 0, "batch_in_epoch": 0}, []
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr,
                                 betas=(config.optim.beta1, config.optim.beta2))
    if resume:
        if state.optimizer_state is not None:
            optimizer.load_state_dict(state.optimizer_state)
        ckpt.restore_rng(state.rng)
    loss_fn = model.loss()

    def save(epoch, batch_in_epoch, sums):
        prog = {"epoch": epoch, "iteration": model.iteration, "batch_in_epoch": batch_in_epoch,
                "epoch_sums": sums}
        ckpt.save(path, model=model, config=config.to_dict(), optimizer=optimizer,
                  progress=prog, metrics=metrics, extra={"baseline": kind})

    def step(x):
        loss, mse = _step(model, loss_fn, optimizer, x)
        return {"loss": loss * x.shape[0], "mse": mse * x.shape[0], "images": x.shape[0]}

    def end_epoch(epoch, sums):
        extra = {"train_loss": sums["loss"] / max(sums["images"], 1), **model.annealing_state()}
        row = training.epoch_row(model, training.Encoder(model, None), config, test_data,
                                 device, epoch, sums, extra=extra)
        metrics.append(row)
        training.rewrite_csv(os.path.join(out_dir, training.METRICS), metrics)
        return {"loss": f"{row['train_loss']:.1f}", "mse": f"{row['test_mse']:.4f}",
                "inactive": f"{row['inactive_fraction_threshold']:.2f}"}

    bar = tqdm(total=config.optim.epochs * iterations_per_epoch, initial=model.iteration,
               disable=not progress, desc=kind, unit="batch", dynamic_ncols=True)
    epoch, interrupted = training.run_epochs(
        model, config, train_data, step, end_epoch, save, progress_state=progress_state,
        fresh_sums={"mse": 0.0, "loss": 0.0, "images": 0, "seconds": 0.0}, bar=bar,
        device=device, stop_after=stop_after)
    if figures and not interrupted and epoch >= config.optim.epochs:
        training.write_figures(model, training.Encoder(model, None), test_data, metrics,
                               out_dir, config, device)
    return training.TrainResult(model, metrics, path, interrupted)
