"""What a run watches after every epoch: the held-out figures (:func:`evaluate`, built on the
one loop over codes, :func:`~pyro_sparsegen.encoding.code_batches`), the ``metrics.csv`` row
(:func:`epoch_row`, :func:`rewrite_csv`) and the collapse watch (:class:`CollapseWatch`)."""

import csv
import math
import warnings

import torch

from .abp import TrainingError
from .checkpoint import BEST
from .distributions import ACTIVE_THRESHOLD
from .encoding import code_batches
from .files import atomic_file
from .infer import ShortRunLangevin
from .metrics import active_mask, per_image_mse


@torch.no_grad()
def _mse(model, z, x):
    return per_image_mse(model.decode(z), x)


def evaluate(model, data, encoder, *, threshold=ACTIVE_THRESHOLD, batch_size=100, limit=None,
             device="cpu"):
    """Held-out figures: reconstruction MSE from the inferred codes and with every inactive
    coordinate set to exactly 0 ("zeroed"), inactive fractions two ways, log joint.

    :param limit: evaluate only this many images, a class-spread subset
        (:meth:`~pyro_sparsegen.data.ImageData.spread_subset`), never the first ones.
    """
    sums = dict.fromkeys(("test_mse", "zeroed_mse", "zeroed_mse_inclusion",
                          "inactive_fraction_threshold", "inactive_fraction_inclusion",
                          "log_joint"), 0.0)
    count = 0
    # the log joint through the model's own trace (a kernel's target; an amortised baseline's
    # encoder has none, so one is made for its model)
    kernel = getattr(encoder, "kernel", None) or ShortRunLangevin(model, noise=False)
    for x, z, latents in code_batches(data, encoder, batch_size=batch_size, device=device,
                                      limit=limit):
        by_threshold, by_inclusion = active_mask(model, z, threshold)
        sums["test_mse"] += _mse(model, z, x).sum().item()
        sums["zeroed_mse"] += _mse(model, z * by_threshold, x).sum().item()
        sums["inactive_fraction_threshold"] += (~by_threshold).float().mean(1).sum().item()
        if by_inclusion is not None:
            sums["zeroed_mse_inclusion"] += _mse(model, z * by_inclusion, x).sum().item()
            sums["inactive_fraction_inclusion"] += (~by_inclusion).float().mean(1).sum().item()
        else:
            sums["zeroed_mse_inclusion"] = sums["inactive_fraction_inclusion"] = float("nan")
        with torch.no_grad():
            local, shared, _, _ = kernel.target((x,), {}).terms(latents, (x,), {})
        sums["log_joint"] += (local.sum() + shared.sum()).item()
        count += x.shape[0]
    return {k: v / max(count, 1) for k, v in sums.items()}


def epoch_row(model, encoder, config, test_data, device, epoch, epoch_sums, extra=None, *,
              iteration=None):
    """One ``metrics.csv`` row: training sums (``images``, ``seconds``, optionally ``loss``
    and ``mse``), held-out figures (:func:`evaluate`), prior parameters, and the loop's own
    ``extra`` columns before ``seconds``; a non-finite held-out MSE raises
    :class:`~pyro_sparsegen.TrainingError`."""
    model.eval()
    figures = evaluate(model, test_data, encoder, threshold=config.threshold,
                       batch_size=config.optim.batch_size, limit=config.data.eval_images,
                       device=device)
    images = max(epoch_sums["images"], 1)
    params = _prior_params(model)
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


def _prior_params(model):
    """The annealed prior's parameters now (NaN for a model without a schedule)."""
    try:
        return tuple(model.prior_params())
    except AttributeError:
        return (float("nan"),) * 3


def rewrite_csv(path, rows):
    """Write the metrics rows to ``path`` atomically and fsynced
    (:func:`~pyro_sparsegen.files.atomic_file`)."""
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


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
