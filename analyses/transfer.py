"""Does the default recipe transfer? The default config, unchanged, on the other embedded image
sizes — scikit-learn's 8×8 digits and the MNIST-5k digits resized to 14×14 — against a dense
ABP model with as many numbers per image as the sparse code's mean active count (chosen from
the sparse model's *training* codes), and, on the 8×8 digits, the first release's recipe
``v1`` (σ 0.3 at every size, no column norms). The likelihood's σ follows the size rule
(``psg.likelihood_scale``: 0.3 · √(pixels / 784)).

The target: a sparse code (≥ 80 % inactive) whose zeroed test MSE is no worse than the dense
model's test MSE. A figure per data set: test images, the sparse model's zeroed
reconstructions, the dense model's reconstructions.

    python analyses/transfer.py --out runs/analysis --quick

Writes ``OUT/transfer.md``, ``.json`` and ``OUT/figures/transfer_<data>.png``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch

import common
import pyro_sparsegen as psg
from common import ev
from pyro_sparsegen import baselines

NAME = "transfer"
TITLE = "Transfer: the default recipe on 8×8 and 14×14 images"
# (label, data spec, image size or None, epochs in the quick mode; None: the config's)
DATASETS = (("digits8", "digits", None, None), ("mnist14", "mnist5k", 14, 10))
INACTIVE_TARGET = 0.80
SHOWN = 10  # test images in each figure


def config_of(ws, spec, size, epochs, recipe="default"):
    config = ws.base_config()
    config.data.spec, config.data.image_size = spec, size
    if epochs is not None and ws.settings.mode == "quick":
        config.optim.epochs = epochs
    elif ws.settings.mode == "full":
        config.optim.epochs = psg.TrainConfig().optim.epochs
    if recipe != "default":
        config.apply_recipe(recipe)
    return config.validate()


def trained(ws, name, config, data):
    """``(model, encoder, seconds)`` of a run trained (or reused) under ``OUT/models/name``."""
    folder, seconds = ws.trained_folder(name, "abp", config, data=data[:2])
    model, config, _ = psg.load_run(folder, device=ws.device)
    model.eval()
    return model, psg.make_inference(model, config), seconds


def decoded(model, z):
    with torch.no_grad():
        return model.decode(torch.as_tensor(z, dtype=torch.float32,
                                            device=ev.adapters.model_device(model))).cpu()


def one_dataset(ws, label, spec, size, epochs):
    data = ws.load_splits(spec, size)
    train, _, test = data
    config = config_of(ws, spec, size, epochs)
    sparse, sparse_encoder, _ = trained(ws, f"transfer_{label}_sparse", config, data)
    train_codes = ws.dataset_codes(sparse, sparse_encoder, train)
    matched = max(1, int(round(ev.sparsity_summary(train_codes)["mean_active"])))
    dense_config = baselines.dense_config(config, matched)
    dense, dense_encoder, _ = trained(ws, f"transfer_{label}_dense_d{matched}", dense_config,
                                      data)
    entries, codes = {}, {}
    runs = [("sparse", sparse, sparse_encoder), (f"dense_d{matched}", dense, dense_encoder)]
    if spec == "digits":  # the first release's recipe, for comparison
        v1 = config_of(ws, spec, size, epochs, recipe="v1")
        model, encoder, _ = trained(ws, f"transfer_{label}_v1", v1, data)
        runs.append(("v1", model, encoder))
    for key, model, encoder in runs:
        codes[key] = ws.dataset_codes(model, encoder, test)
        entries[key] = ev.sparsity_summary(codes[key])
    shown = ws.spread(test, min(SHOWN, len(test)))
    rows = [test.images()[shown],
            decoded(sparse, codes["sparse"]["z"][shown] * codes["sparse"]["active"][shown]),
            decoded(dense, codes[f"dense_d{matched}"]["z"][shown])]
    path = psg.plots.plot_image_grid(
        rows, ws.figure_path(f"transfer_{label}.png"),
        titles=["test images", "sparse, inactive coordinates set to 0",
                f"dense ABP, d = {matched}"])
    sparse_entry, dense_entry = entries["sparse"], entries[f"dense_d{matched}"]
    met = bool(sparse_entry["inactive_fraction"] >= INACTIVE_TARGET and
               sparse_entry["zeroed_mse"] <= dense_entry["test_mse"])
    return {"data": spec, "image_size": list(train.image_shape[1:]),
            "noise_scale": psg.likelihood_scale(config.network.noise_scale, train.image_shape),
            "epochs": config.optim.epochs, "train_images": len(train),
            "test_images": len(test), "matched_latent_dim": matched, "models": entries,
            "target_met": met, "figure": ws.relative(path)}


def run(ws):
    results, rows, figures = {}, [], []
    for label, spec, size, epochs in DATASETS:
        entry = one_dataset(ws, label, spec, size, epochs)
        results[label] = entry
        h, w = entry["image_size"]
        for key, e in entry["models"].items():
            what = {"sparse": "sparse, default recipe", "v1": "sparse, recipe v1"}.get(
                key, f"dense ABP, d = {entry['matched_latent_dim']} (as many numbers)")
            sigma = 0.3 if key == "v1" else entry["noise_scale"]
            rows.append([f"{spec} {h}×{w}", what, common.fmt(sigma, 3),
                         common.fmt(e["test_mse"], 4), common.fmt(e["zeroed_mse"], 4),
                         common.fmt(e["inactive_fraction"], 3),
                         common.fmt(e["mean_active"], 1)])
        figures.append((f"{spec} {h}×{w}: test images, sparse (zeroed), dense", entry["figure"]))
    runs, verdicts = [], []
    for e in results.values():
        size = f"{e['data']} {e['image_size'][0]}×{e['image_size'][1]}"
        runs.append(f"{size}: {e['epochs']} epochs, {e['train_images']} training images")
        verdicts.append(f"{size}: {'met' if e['target_met'] else 'missed'}")
    note = (f"One seed each (training seed {ws.settings.seed}). Every model with the default "
            f"settings on its own data ({'; '.join(runs)}), "
            f"measured on the test images. The target — at least {INACTIVE_TARGET:.0%} "
            f"inactive (|z| ≤ {ws.threshold:g}) with a zeroed test MSE no worse than the test "
            f"MSE of a dense model with as many numbers per image — {'; '.join(verdicts)}.")
    header = ["data", "model", "σ", "test MSE", "zeroed MSE", "inactive", "active"]
    return common.Section(NAME, TITLE, [note, common.md_table(header, rows)], figures,
                          {"transfer": results})


def main(argv=None):
    return common.main(__file__, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
