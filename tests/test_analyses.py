"""The scripts in ``analyses/``: each one's quick path on a tiny subset (the hidden ``--tiny``
flag: 200 + 100 scikit-learn digits, latent size 6, two seeds, three short epochs), reusing one
set of models trained by ``run_all.py``; and the protocol's sanity on it (the noisy floor below
the clean ceiling, accuracy falling with the noise, a model that returns its input reproducing
the floor through the scripts' own plumbing)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pyro_sparsegen as psg

ANALYSES = Path(__file__).resolve().parent.parent / "analyses"
sys.path.insert(0, str(ANALYSES))

import classify_codes  # noqa: E402
import common  # noqa: E402
import denoise_classify  # noqa: E402
import denoise_quality  # noqa: E402
import explainability  # noqa: E402
import reconstruction_sparsity  # noqa: E402
import run_all  # noqa: E402
import sample_quality  # noqa: E402
import transfer  # noqa: E402
import variant_priors  # noqa: E402
from common import ev  # noqa: E402

SCRIPTS = (reconstruction_sparsity, denoise_classify, denoise_quality, classify_codes,
           sample_quality, explainability, variant_priors, transfer)
FIELDS = ("test_mse", "zeroed_mse", "inactive_fraction", "mean_active", "denoise_accuracy",
          "denoise_accuracy_clipped", "sample_fid", "probe_accuracy")
SIGMAS = ("0.3", "0.5", "0.7")
TINY = ["--data", "digits", "--tiny", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _one_thread():
    # as the scripts run on CPU (common.cpu_threads): tiny models, shared cores
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run_all")
    assert run_all.main(TINY + ["--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def results(tiny_run):
    return json.loads((tiny_run / "results.json").read_text())


def workspace(runs, out):
    """A workspace reusing the models of ``runs``."""
    return common.Workspace(common.parse_settings("test", "", TINY + ["--out", str(out),
                                                                      "--runs", str(runs)]))


def tables(markdown):
    """Every Markdown table as a list of rows (lists of cell texts), header first."""
    found, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").replace("\\|", "¦").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def assert_filled(markdown):
    found = tables(markdown)
    assert found, "no table"
    for table in found:
        width = len(table[0])
        assert len(table) > 1, table
        for row in table:
            assert len(row) == width, row
            for cell in row:
                assert cell, f"empty cell in {row}"
                assert not any(bad in cell.lower() for bad in ("nan", "inf", "none")), row


def assert_finite(value, where):
    if isinstance(value, dict):
        assert value, where
        for key, item in value.items():
            assert_finite(item, f"{where}.{key}")
    else:
        assert isinstance(value, (int, float)) and math.isfinite(value), (where, value)


def test_run_all_writes_report_and_results(tiny_run, results):
    for key in common.MODEL_KEYS:
        for field in FIELDS:
            assert_finite(results[key][field], f"{key}.{field}")
        for field in ("denoise_accuracy", "denoise_accuracy_clipped"):
            assert set(results[key][field]) == set(SIGMAS)
        assert set(results[key]["probe_accuracy"]) == {"100", "all"}
        assert 0 <= results[key]["inactive_fraction"] <= 1
        assert results[key]["seeds"] == [0, 1]  # the tiny mode trains two seeds
        jac = results[key]["class_jaccard"]  # undefined only when no class has an active set
        assert (results[key]["empty_class_sets"] == 10) if jac is None else 0 <= jac <= 1
        if key != "sparse":  # every accuracy is compared with the sparse model's
            for field in ("denoise_accuracy", "denoise_accuracy_clipped"):
                for s in SIGMAS:
                    comparison = results[key][f"{field}_comparison"][s]
                    assert comparison["verdict"] in ("wins", "ties", "loses")
                    assert comparison["difference"] == pytest.approx(
                        results["sparse"][field][s] - results[key][field][s])
            assert set(results[key]["probe_comparison"]) == {"100", "all"}
    for field in ("denoise_accuracy", "denoise_accuracy_clipped"):
        assert_finite(results["noisy_input"][field], f"noisy_input.{field}")
    for key in ("sparse", "dense_abp", "dense_matched"):  # the labelled, censored variant
        assert_finite(results[key]["denoise_accuracy_clipped_censored"], key)
    assert results["noisy_input"]["denoise_accuracy_clipped_censored"] == \
        results["noisy_input"]["denoise_accuracy_clipped"]
    meta = results["meta"]
    assert meta["settings"]["mode"] == "tiny" and meta["settings"]["seeds"] == [0, 1]
    assert meta["baselines"]["vsc"]["options"]["alpha"] == 0.01
    assert meta["baselines"]["beta_vae"]["lr"] == 1e-3
    assert meta["models"]["vsc_seed1"]["early_stopping"]["min_epochs"] == 3
    assert {"sparse", "sparse_w0.1"} == set(meta["sweep"])
    assert {"dense_d2", "dense_matched", "dense_abp"} <= set(meta["frontier"])
    assert len(meta["targets"]) == 10  # 8 on the main data, one per transfer data set
    fid = meta["fid_reference"]  # two halves of the test images: the estimate's noise level
    assert fid["two halves of the test images"] < 0.2 * fid["uniform noise images"]
    report = (tiny_run / "report.md").read_text()
    assert_filled(report)
    for script in SCRIPTS:
        assert script.TITLE in report
    assert "Targets (issue 15" in report and "sparsity_frontier.png" in report
    figures = [line[line.index("](") + 2:-1] for line in report.splitlines()
               if line.startswith("![")]
    assert len(figures) >= 19  # a sample grid, a class map and traversals per model, ...
    for path in figures:
        assert (tiny_run / path).stat().st_size > 0, path


def test_variant_priors_train_every_prior_by_both_routes(results):
    variants = results["meta"]["variants"]
    assert set(variants) == {f"variant_{p}_{r}" for p in variant_priors.PRIORS
                             for r in variant_priors.ROUTES}
    for entry in variants.values():
        for field in ("test_mse", "zeroed_mse", "inactive_fraction", "mean_active",
                      "prior_mean_active"):
            assert_finite(entry[field], field)
    # the plain function trains the same model as the package's class (same seed, same
    # arithmetic): the function route works, and the table compares priors, not routes
    for prior in variant_priors.PRIORS:
        cls, fn = variants[f"variant_{prior}_class"], variants[f"variant_{prior}_function"]
        assert fn["test_mse"] == pytest.approx(cls["test_mse"], rel=1e-3), prior
        assert fn["mean_active"] == pytest.approx(cls["mean_active"], abs=0.05), prior
    # a Laplace prior has no spike: its codes are far less sparse than the spike-and-slab's
    assert variants["variant_laplace_class"]["inactive_fraction"] < \
        variants["variant_annealed_class"]["inactive_fraction"]


def test_the_learned_prior_learns_its_weights_by_both_routes(results):
    # the weights themselves: after three tiny epochs they move too little to show in the
    # table's numbers, so those alone would pass a function route that never learns them
    variants = results["meta"]["variants"]
    cls = psg.checkpoint.load(os.path.join(variants["variant_learned_class"]["folder"],
                                           "checkpoint.h5"))
    fn = psg.checkpoint.load(os.path.join(variants["variant_learned_function"]["folder"],
                                          "checkpoint.h5"))
    learned_cls = torch.sigmoid(torch.as_tensor(cls.model_state["slab_logit"]))
    learned_fn = torch.sigmoid(torch.as_tensor(fn.params["slab_weight"][0]))  # unit interval
    schedule = psg.TrainConfig.from_dict(fn.config).build_schedule(iterations_per_epoch=1)
    start = schedule(schedule.end).slab_weight  # where both routes start their weights
    assert (learned_cls - start).abs().max() > 0.01  # learned, not left at the start
    torch.testing.assert_close(learned_fn, learned_cls, atol=1e-4, rtol=0)


def test_transfer_trains_the_default_at_every_embedded_size(results, tiny_run):
    runs = results["meta"]["transfer"]
    assert {k: v["image_size"] for k, v in runs.items()} == {"digits8": [8, 8],
                                                             "mnist14": [14, 14]}
    for entry in runs.values():
        d = entry["matched_latent_dim"]
        sparse = entry["models"]["sparse"]
        # the dense model has as many numbers per image as the sparse code's training mean
        assert entry["models"][f"dense_d{d}"]["latent_dim"] == d >= 1
        assert sparse["latent_dim"] == 6  # the tiny mode's latent size, not the dense one
        assert entry["target_met"] == (
            sparse["inactive_fraction"] >= transfer.INACTIVE_TARGET and
            sparse["zeroed_mse"] <= entry["models"][f"dense_d{d}"]["test_mse"])
        assert (tiny_run / entry["figure"]).stat().st_size > 0
    assert "v1" in runs["digits8"]["models"] and "v1" not in runs["mnist14"]["models"]
    targets = [c["target"] for c in results["meta"]["targets"]]
    assert sum("as many numbers" in t for t in targets) == 2


def test_protocol_sanity_floor_below_ceiling_falling_with_noise(results):
    floor = results["noisy_input"]
    ceiling = floor["denoise_accuracy_clean"]
    for field in ("denoise_accuracy", "denoise_accuracy_clipped"):
        accuracy = [floor[field][s] for s in SIGMAS]
        assert all(a < ceiling for a in accuracy), (field, accuracy, ceiling)
        assert accuracy[0] > accuracy[1] > accuracy[2], (field, accuracy)
    # unclipped noise keeps more of the digit than noise clipped onto a grey background
    assert floor["denoise_psnr"]["0.5"] == pytest.approx(-10 * np.log10(0.25), abs=0.3)


class _Identity(torch.nn.Module):
    """A model whose code is the image: encode flattens, decode reshapes."""

    def __init__(self, image_shape):
        super().__init__()
        self.network = lambda z: z.reshape(len(z), *image_shape)

    def decode(self, z):
        return self.network(z)

    @staticmethod
    def encoder(x):
        return x.flatten(1).clone()


def test_a_model_returning_its_input_reproduces_the_floor(tiny_run, tmp_path):
    ws = workspace(tiny_run, tmp_path)
    identity = _Identity(ws.test.image_shape)
    base = ws.model("sparse")
    ws.cached(("model", "identity", 0), lambda: common.Loaded(
        "identity", 0, identity, base.config, identity.encoder, "", None, {}))
    for clip in (False, True):
        same = denoise_classify.entry(ws, "identity", clip)
        floor = denoise_classify.entry(ws, None, clip)
        assert same["mean"] == floor["mean"] and same["sd"] == floor["sd"]
        for s in common.NOISE_LEVELS:
            assert np.array_equal(ws.denoise("identity", clip=clip)[s].accuracy.correct,
                                  ws.denoise(None, clip=clip)[s].accuracy.correct)
    for s in common.NOISE_LEVELS:
        assert np.array_equal(ws.denoise("identity")[s].ssim, ws.denoise(None)[s].ssim)
    assert not (tmp_path / "models").exists()


def test_matched_budget_comes_from_training_codes(tiny_run, tmp_path, monkeypatch):
    ws = workspace(tiny_run, tmp_path)
    calls, codes = [], ws.codes
    monkeypatch.setattr(ws, "codes", lambda key, seed, split: calls.append(
        (key, seed, split)) or codes(key, seed, split))
    d = ws.matched_latent_dim()
    assert calls == [("sparse", 0, "train")]
    active = ev.sparsity_summary(codes("sparse", 0, "train"))["mean_active"]
    assert d == max(1, round(active)) == ws.model("dense_matched").config.network.latent_dim


def test_targets_follow_the_verdict_rule():
    def comparison(verdict):
        return {s: {"verdict": verdict} for s in ("0.5", "0.7")}

    accuracy = {"0.5": 0.86, "0.7": 0.83}
    results = {
        "sparse": {"inactive_fraction": 0.9, "zeroed_mse": 0.010, "sample_fid": 3.0,
                   "class_jaccard": 0.2, "denoise_accuracy": accuracy,
                   "denoise_accuracy_clipped": {"0.5": 0.60, "0.7": 0.50}},
        "dense_abp": {"test_mse": 0.004, "latent_dim": 100, "sample_fid": 2.0,
                      "denoise_accuracy": {"0.5": 0.85, "0.7": 0.83},
                      "denoise_accuracy_comparison": comparison("ties"),
                      "denoise_accuracy_clipped": {"0.5": 0.55, "0.7": 0.52},
                      "denoise_accuracy_clipped_comparison": comparison("ties")},
        "noisy_input": {"denoise_accuracy_clipped": {"0.5": 0.50, "0.7": 0.40},
                        "denoise_accuracy_clipped_comparison": comparison("wins")},
    }
    for key in ("dense_matched", "beta_vae", "vsc"):
        results[key] = {"denoise_accuracy": {"0.5": 0.80, "0.7": 0.70},
                        "denoise_accuracy_comparison": comparison("wins")}
    checks = {c["target"]: c for c in run_all.targets(results)}
    met = {name.split(",")[0] + (" clipped" if "clipped" in name else ""): c["met"]
           for name, c in checks.items()}
    assert met == {
        "inactive fraction (|z| ≤ 0.2) ≥ 0.85": True,
        "zeroed test MSE ≤ 2 × dense ABP (d = 100) test MSE": False,  # 2.5x
        "denoise accuracy at σ = 0.5": True, "denoise accuracy at σ = 0.7": True,  # ≥, a tie
        "denoise accuracy at σ = 0.5 clipped": True,
        "denoise accuracy at σ = 0.7 clipped": False,  # below dense ABP's 0.52
        "sample FID ≤ dense ABP's": False, "mean class Jaccard < 0.3": True}
    rivals = checks["denoise accuracy at σ = 0.7, authors' protocol: ≥ every baseline"]["rivals"]
    assert rivals == {"dense_abp": "ties", "dense_matched": "wins", "beta_vae": "wins",
                      "vsc": "wins"}
    table = run_all.targets_table(list(checks.values()))
    assert "missed" in table and "(dense ABP: ties" in table


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.NAME)
def test_script_alone_reuses_models(script, tiny_run, tmp_path, capsys):
    assert script.main(TINY + ["--out", str(tmp_path), "--runs", str(tiny_run)]) == 0
    assert not (tmp_path / "models").exists()  # nothing trained again
    markdown = (tmp_path / f"{script.NAME}.md").read_text()
    assert_filled(markdown)
    assert script.TITLE in capsys.readouterr().out
    numbers = json.loads((tmp_path / f"{script.NAME}.json").read_text())
    if script is variant_priors:  # its own eight models, one entry each
        assert set(numbers) == {"variants"} and len(numbers["variants"]) == 8
    elif script is transfer:  # its own data sets
        assert set(numbers) == {"transfer"} and len(numbers["transfer"]) == 2
    else:
        assert set(common.MODEL_KEYS) <= set(numbers)


def test_finished_models_are_not_retrained(tiny_run, capsys):
    checkpoints = sorted((tiny_run / "models").glob("*/checkpoint.h5"))
    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    assert reconstruction_sparsity.main(TINY + ["--out", str(tiny_run)]) == 0
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
    assert "training" not in capsys.readouterr().err


@pytest.mark.parametrize("argv, status, message", [
    (["--out"], 2, "expected one argument"),
    (["--out", "X", "--bogus"], 2, "unrecognized arguments"),
    (["--out", "X", "--runs", "/no/such/folder"], 2, "no such folder"),
    (["--out", "X", "--seeds", "0"], 2, "--seeds"),
    (["--out", "X", "--data", "nosuch"], 1, "unknown data spec"),
    (["--out", "X", "--device", "tpu"], 1, "--device"),
])
def test_bad_arguments_one_line(argv, status, message, tmp_path, capsys):
    argv = [a if a != "X" else str(tmp_path / "out") for a in argv]
    try:
        code = classify_codes.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == status
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_script_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ANALYSES / "explainability.py"), "--out",
                           str(tmp_path), "--data", "no/such.npz"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": ""})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "explainability.py: error:" in proc.stderr
