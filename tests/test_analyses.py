"""The scripts in ``analyses/``: each one's quick path on a tiny subset (the hidden ``--tiny``
flag: 200 + 100 scikit-learn digits, latent size 6, two seeds, three short epochs, ``--sweeps``
so that every script runs), reusing one set of models trained by ``run_all.py``; the protocol's
sanity on it (the noisy floor below the clean ceiling, accuracy falling with the noise, a model
that returns its input reproducing the floor through the scripts' own plumbing); the
seed-level verdicts on hand-made numbers; and ``run_all`` without ``--sweeps``, its missing
main models trained by a pool of two processes."""

import json
import math
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import pyro_sparsegen as psg

ANALYSES = Path(__file__).resolve().parent.parent / "analyses"
sys.path.insert(0, str(ANALYSES))

import bayes_denoise  # noqa: E402
import classify_codes  # noqa: E402
import common  # noqa: E402
import compare_recipes  # noqa: E402
import denoise_classify  # noqa: E402
import denoise_quality  # noqa: E402
import explainability  # noqa: E402
import learned_scale  # noqa: E402
import long_runs  # noqa: E402
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
TINY = ["--data", "digits", "--tiny", "--device", "cpu", "--sweeps"]
CORE_ONLY = [a for a in TINY if a != "--sweeps"]


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
    assert len(meta["targets"]) == 12  # 8 on the main data, 2 longer runs, 1 per transfer set
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


def test_the_t_quantile_over_seeds():
    assert common.t_quantile(3) == pytest.approx(4.303, abs=5e-4)  # df = 2
    assert common.t_quantile(2) == pytest.approx(12.706, abs=5e-4)
    assert common.t_quantile(5) == pytest.approx(2.776, abs=5e-4)


def test_seed_verdict_wins_not_worse_loses():
    half = 4.303 * 0.01 / math.sqrt(3)  # differences 0.04, 0.05, 0.03: sd 0.01
    wins = common.seed_verdict([0.90, 0.92, 0.91], [0.86, 0.87, 0.88], margin=0.005)
    assert wins["verdict"] == "wins" and wins["n_seeds"] == 3
    assert wins["mean_difference"] == pytest.approx(0.04)
    assert wins["interval"] == pytest.approx([0.04 - half, 0.04 + half], abs=1e-4)
    # a tie on the mean, the lower bound -0.0025 above -0.5 points
    tie = common.seed_verdict([0.861, 0.860, 0.859], [0.860, 0.860, 0.860], margin=0.005)
    assert tie["verdict"] == "not worse" and tie["interval"][0] > -0.005
    behind = common.seed_verdict([0.849, 0.850, 0.851], [0.860, 0.860, 0.860], margin=0.005)
    assert behind["verdict"] == "loses"
    # ahead on the mean, but the seeds disagree: the interval decides, not the mean
    noisy = common.seed_verdict([0.88, 0.85, 0.91], [0.86, 0.86, 0.86], margin=0.005)
    assert noisy["mean_difference"] > 0 and noisy["verdict"] == "loses"


def test_seed_verdict_orientation_for_lower_is_better():
    # FID: rival - sparse = 2.0, 2.5, 1.5 (sd 0.5): positive, the sparse model is better
    fid = common.seed_verdict([10.0, 10.5, 11.5], [12.0, 13.0, 13.0], higher_is_better=False,
                              relative_margin=0.05)
    assert fid["mean_difference"] == pytest.approx(2.0) and fid["verdict"] == "wins"
    assert fid["margin"] == pytest.approx(0.05 * 38.0 / 3)
    assert fid["interval"][0] == pytest.approx(2.0 - 4.303 * 0.5 / math.sqrt(3), abs=1e-3)
    worse = common.seed_verdict([12.0, 13.0, 13.0], [10.0, 10.5, 11.5], higher_is_better=False,
                                relative_margin=0.05)
    assert worse["mean_difference"] == pytest.approx(-2.0) and worse["verdict"] == "loses"
    # 0.2 higher at every seed, within 5 % of the rival's 10.1
    close = common.seed_verdict([10.2, 10.4, 10.3], [10.0, 10.2, 10.1], higher_is_better=False,
                                relative_margin=0.05)
    assert close["mean_difference"] == pytest.approx(-0.2) and close["verdict"] == "not worse"


def test_seed_verdict_one_seed_a_fixed_rival_and_missing_values():
    one = common.seed_verdict([0.9], [0.8], margin=0.005)
    assert one["interval"] is None and one["verdict"] == common.ONE_SEED == "one seed: no verdict"
    assert one["mean_difference"] == pytest.approx(0.1) and one["n_seeds"] == 1
    floor = common.seed_verdict([0.90, 0.91, 0.92], [0.50], margin=0.005)  # no training seeds
    assert floor["n_seeds"] == 3 and floor["mean_difference"] == pytest.approx(0.41)
    gap = common.seed_verdict([0.90, None, 0.92], [0.80, 0.81, 0.82], margin=0.005)
    assert gap["n_seeds"] == 2 and gap["mean_difference"] == pytest.approx(0.10)
    with pytest.raises(ValueError, match="one value per seed"):
        common.seed_verdict([0.9, 0.8], [0.8, 0.7, 0.6])


def test_threshold_verdict():
    assert common.threshold_verdict([0.90, 0.91, 0.89], 0.85, at_least=True)["verdict"] == "met"
    # mean 0.86 ≥ 0.85, the interval (± 0.05) reaching below it
    near = common.threshold_verdict([0.86, 0.84, 0.88], 0.85, at_least=True)
    assert near["verdict"] == "undecided" and near["mean"] == pytest.approx(0.86)
    assert near["interval"] == pytest.approx([0.86 - 4.303 * 0.02 / math.sqrt(3),
                                              0.86 + 4.303 * 0.02 / math.sqrt(3)], abs=1e-4)
    assert common.threshold_verdict([0.80, 0.82, 0.81], 0.85,
                                    at_least=True)["verdict"] == "missed"
    below = common.threshold_verdict([0.20, 0.21, 0.19], 0.3, at_least=False)
    assert below["verdict"] == "met" and below["mean_difference"] == pytest.approx(0.1)
    assert common.threshold_verdict([0.29, 0.32, 0.26], 0.3, at_least=False)["verdict"] == \
        "undecided"
    assert common.threshold_verdict([0.2], 0.3, at_least=False)["verdict"] == common.ONE_SEED


def test_targets_follow_the_seed_verdicts():
    def model(**figures):
        """Seed means and seed values of per-seed ``figures`` (lists, or {sigma: list})."""
        entry = {"seed_values": figures}
        for field, values in figures.items():
            entry[field] = ({k: float(np.mean(v)) for k, v in values.items()}
                            if isinstance(values, dict) else float(np.mean(values)))
        return entry

    results = {
        "sparse": model(inactive_fraction=[0.90, 0.91, 0.89],
                        zeroed_mse=[0.0100, 0.0102, 0.0098], sample_fid=[3.0, 3.2, 2.8],
                        class_jaccard=[0.20, 0.22, 0.18],
                        denoise_accuracy={"0.5": [0.86, 0.87, 0.85], "0.7": [0.83, 0.84, 0.82]},
                        denoise_accuracy_clipped={"0.5": [0.60, 0.61, 0.59],
                                                  "0.7": [0.50, 0.52, 0.48]}),
        "dense_abp": model(test_mse=[0.0040, 0.0041, 0.0039], sample_fid=[2.0, 2.1, 1.9],
                           denoise_accuracy={"0.5": [0.84, 0.85, 0.83],
                                             "0.7": [0.83, 0.84, 0.82]},
                           denoise_accuracy_clipped={"0.5": [0.55, 0.56, 0.54],
                                                     "0.7": [0.53, 0.52, 0.51]}),
        "noisy_input": model(denoise_accuracy_clipped={"0.5": [0.50], "0.7": [0.40]}),
    }
    results["dense_abp"]["latent_dim"] = 100
    for key in ("dense_matched", "beta_vae", "vsc"):
        results[key] = model(denoise_accuracy={"0.5": [0.80, 0.80, 0.80],
                                               "0.7": [0.70, 0.71, 0.69]})
    checks = {c["target"].split(",")[0] + (" clipped" if "clipped" in c["target"] else ""): c
              for c in run_all.targets(results, sweeps=False)}
    verdicts = {name: c["verdict"] for name, c in checks.items()}
    assert verdicts == {
        "inactive fraction (|z| ≤ 0.2) ≥ 0.85": "met",
        "zeroed test MSE ≤ 2 × dense ABP (d = 100) test MSE": "missed",  # 2.5x at every seed
        "denoise accuracy at σ = 0.5": "met",  # wins over every baseline
        "denoise accuracy at σ = 0.7": "met",  # equal to dense ABP at every seed: not worse
        "denoise accuracy at σ = 0.5 clipped": "met",
        "denoise accuracy at σ = 0.7 clipped": "missed",  # below dense ABP's 0.52
        "sample FID ≤ dense ABP's": "missed", "mean class Jaccard < 0.3": "met",
        "transfer digits8 (digits): inactive ≥ 0.80": "not run (--sweeps)",
        "transfer mnist14 (mnist5k): inactive ≥ 0.80": "not run (--sweeps)",
        "inactive fraction (|z| ≤ 0.2) ≥ 0.85 after 60 epochs (its own run)": run_all.LONG_SKIP,
        "inactive fraction (|z| ≤ 0.2) ≥ 0.85 after 100 epochs (its own run)":
            run_all.LONG_SKIP}
    rivals = checks["denoise accuracy at σ = 0.7"]["rivals"]
    assert {r: v["verdict"] for r, v in rivals.items()} == {
        "dense_abp": "not worse", "dense_matched": "wins", "beta_vae": "wins", "vsc": "wins"}
    assert rivals["dense_matched"]["mean_difference"] == pytest.approx(0.13)
    assert checks["zeroed test MSE ≤ 2 × dense ABP (d = 100) test MSE"]["met"] is False
    assert "(2.50 ± 0.03×)" in checks["zeroed test MSE ≤ 2 × dense ABP (d = 100) test MSE"][
        "measured"]
    table = run_all.targets_table(list(checks.values()))
    assert "dense ABP: +0.0 ± 0.0 (3 seeds): not worse" in table
    assert "0.900 ± 0.025 (3 seeds): met" in table and "not run (--sweeps)" in table
    # one seed: the figures, no verdict
    single = {key: {field: (value if field != "seed_values" else {
        f: ({k: v[:1] for k, v in vs.items()} if isinstance(vs, dict) else vs[:1])
        for f, vs in value.items()}) for field, value in entry.items()}
        for key, entry in results.items()}
    for c in run_all.targets(single):
        if c["verdict"] != run_all.LONG_SKIP:
            assert c["met"] is None and c["verdict"] == common.ONE_SEED, c["target"]
    # the longer runs' inactive fraction, one row per length, as its threshold verdict says
    long = {e: {"inactive_fraction": float(np.mean(v)),
                "verdict": common.threshold_verdict(v, 0.85, at_least=True)}
            for e, v in (("60", [0.90, 0.91, 0.89]), ("100", [0.84, 0.83, 0.85]))}
    found = {c["target"]: c for c in run_all.targets(results, long=long)}
    after = {e: found[f"inactive fraction (|z| ≤ 0.2) ≥ 0.85 after {e} epochs (its own run)"]
             for e in long}
    assert (after["60"]["verdict"], after["60"]["met"]) == ("met", True)
    assert (after["100"]["verdict"], after["100"]["met"]) == ("missed", False)
    assert after["100"]["measured"] == "0.840"


def test_results_hold_seed_values_and_verdicts(results):
    def check(figure, values, where):
        if isinstance(figure, dict):
            assert set(values) == set(figure), where
            for k in figure:
                check(figure[k], values[k], f"{where}.{k}")
            return
        assert isinstance(values, list), where
        kept = [v for v in values if v is not None]
        assert figure == pytest.approx(np.mean(kept) if kept else None), where

    expected = {"test_mse", "zeroed_mse", "inactive_fraction", "mean_active", "latent_dim",
                "denoise_accuracy", "denoise_accuracy_clipped", "denoise_accuracy_clean",
                "denoise_psnr", "denoise_ssim", "sample_fid", "probe_accuracy",
                "class_jaccard"}
    for key in common.MODEL_KEYS:
        values = results[key]["seed_values"]
        assert expected <= set(values), key
        for field, per_seed in values.items():
            if field != "latent_dim":  # the first seed's (the matched budget varies by seed)
                check(results[key][field], per_seed, f"{key}.{field}")
        assert len(values["zeroed_mse"]) == len(values["sample_fid"]) == 2  # two seeds
        assert len(values["denoise_accuracy"]["0.5"]) == 2
    assert len(results["noisy_input"]["seed_values"]["denoise_accuracy"]["0.5"]) == 1
    dims = results["meta"]["settings"]["matched_latent_dims"]
    assert dims == results["dense_matched"]["seed_values"]["latent_dim"]
    assert dims == [results["meta"]["models"][n]["latent_dim"]
                    for n in ("dense_matched", "dense_matched_seed1")]
    verdicts = results["verdicts"]
    assert verdicts == json.loads(json.dumps(run_all.verdicts(results)))
    # by hand: the mean of the per-seed differences
    own = results["sparse"]["seed_values"]["denoise_accuracy"]["0.5"]
    theirs = results["vsc"]["seed_values"]["denoise_accuracy"]["0.5"]
    vsc = verdicts["denoise_accuracy"]["0.5"]["vsc"]
    assert vsc["mean_difference"] == pytest.approx(np.mean(own) - np.mean(theirs))
    assert vsc["n_seeds"] == 2 and len(vsc["interval"]) == 2
    assert vsc["verdict"] in ("wins", "not worse", "loses")
    for field in ("inactive_fraction", "class_jaccard"):
        assert verdicts[field]["n_seeds"] == 2
    main = [c for c in results["meta"]["targets"] if c["verdict"] != run_all.LONG_SKIP]
    for c in main[:8]:  # the main data's: from the verdicts
        assert c["verdict"] in ("met", "missed", "undecided"), c
    for name, m in results["meta"]["models"].items():  # one process in the tiny mode
        assert m["trained_by"] == "main process", name


MISSING = ("dense_matched_seed1", "vsc_seed1")  # what the pool of two trains


@pytest.fixture(scope="module")
def core_only(tiny_run, tmp_path_factory):
    """``run_all.run`` without ``--sweeps``, ``--jobs 2``, on a copy of the tiny run's main
    models less :data:`MISSING`; the scripts other than reconstruction_sparsity stubbed (each
    runs in its own test): ``(out, workspace, results, scripts run)``."""
    out = tmp_path_factory.mktemp("core_only")
    for key in common.MODEL_KEYS:
        for seed in (0, 1):
            name = key if seed == 0 else f"{key}_seed{seed}"
            if name not in MISSING:
                shutil.copytree(tiny_run / "models" / name, out / "models" / name)
    ws = common.Workspace(common.parse_settings(
        "run_all", "", CORE_ONLY + ["--out", str(out), "--jobs", "2"], jobs=True))
    ran = []

    def stub(script):
        def run(ws):
            ran.append(script.NAME)
            return common.Section(script.NAME, script.TITLE, ["stub"], [], {})
        return run

    with pytest.MonkeyPatch.context() as patch, common.cpu_threads(ws.settings, ws.device):
        for script in run_all.SCRIPTS:
            if script is not reconstruction_sparsity:
                patch.setattr(script, "run", stub(script))
        results = run_all.run(ws)
    return out, ws, results, ran


def test_the_pool_trains_what_the_workspace_would(core_only, tiny_run):
    out, ws, results, _ = core_only
    models = results["meta"]["models"]
    for name in MISSING:  # trained side by side, loaded by the scripts, not trained again
        assert models[name]["trained_by"] == "pool" and models[name]["trained_seconds"] > 0
        assert (out / "models" / name / common.REQUEST).read_text() == \
            (tiny_run / "models" / name / common.REQUEST).read_text()
        mine = psg.checkpoint.load(str(out / "models" / name / "checkpoint.h5"))
        theirs = psg.checkpoint.load(str(tiny_run / "models" / name / "checkpoint.h5"))
        assert mine.model_state.keys() == theirs.model_state.keys()
        for k in mine.model_state:  # the same seed, the same arithmetic, another process
            torch.testing.assert_close(mine.model_state[k], theirs.model_state[k])
    assert {n for n, m in models.items() if m["trained_by"] is not None} == set(MISSING)
    assert not any(ws.needs_training(k, s) for k in common.MODEL_KEYS for s in ws.seeds)
    assert "train main models (2 processes)" in results["meta"]["timings_seconds"]


def test_matched_budget_is_fixed_per_seed(core_only):
    # the pool's dense_matched_seed1 got its size from seed 1's sparse training codes
    _, ws, results, _ = core_only
    assert ("codes", "sparse", 1, "train") in ws._cache  # what the size was computed from
    active = ev.sparsity_summary(ws.codes("sparse", 1, "train"))["mean_active"]
    d = ws.matched_latent_dim(1)
    assert d == max(1, round(active)) == ws.model("dense_matched", 1).config.network.latent_dim
    assert results["meta"]["settings"]["matched_latent_dims"] == [ws.matched_latent_dim(0), d]


def test_without_sweeps_the_one_seed_extras_are_skipped(core_only):
    out, ws, results, ran = core_only
    assert ran == [s.NAME for s in run_all.SCRIPTS if s not in run_all.SWEEP_SCRIPTS +
                   run_all.LEARNED_SCALE_SCRIPTS + run_all.BAYES_SCRIPTS +
                   run_all.LONG_RUN_SCRIPTS + (reconstruction_sparsity,)]
    meta = results["meta"]
    assert meta["skipped"] == list(run_all.SKIPPED) and meta["settings"]["sweeps"] is False
    assert meta["settings"]["learned_scale"] is False and results["learned_scale"] == {}
    assert meta["settings"]["bayes_denoise"] is False and meta["bayes_denoise"] == {}
    assert meta["settings"]["config"] is None and meta["settings"]["recipe"] is None
    for key in ("sweep", "frontier", "variants", "transfer"):
        assert meta[key] == {}, key
    assert {m["key"] for m in meta["models"].values()} == set(common.MODEL_KEYS)
    report = (out / "report.md").read_text()
    assert report.count(run_all.SKIP_LINE) == 1 and report.count(run_all.BAYES_SKIP_LINE) == 1
    assert "not run (add --sweeps)" in report and "Slab-weight sweep (" not in report
    assert variant_priors.TITLE not in report and transfer.TITLE not in report
    rows = [c for c in meta["targets"] if c["verdict"] == "not run (--sweeps)"]
    assert len(meta["targets"]) == 12 and len(rows) == len(transfer.DATASETS)
    assert [c["verdict"] for c in meta["targets"]].count(run_all.LONG_SKIP) == 2
    assert meta["settings"]["long_runs"] is False and results["long_runs"] == {}


def test_a_failed_training_job_is_one_line_naming_the_model(tiny_run, tmp_path):
    ws = workspace(tiny_run, tmp_path)
    settings = common.parse_settings("run_all", "", CORE_ONLY + [
        "--out", str(tmp_path), "--data", "npz:/no/such.npz"], jobs=True)
    outcome = common.train_job(settings, "vsc", 1)  # what a process of the pool returns
    assert outcome["user"] and "no/such.npz" in outcome["error"]
    with pytest.raises(common.AnalysisError) as caught:
        common._collect(ws, "vsc_seed1", outcome)
    assert str(caught.value).startswith("training vsc_seed1 (VSC) failed: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("low, high, expected", [
    (0.0105, 0.067, ["0.01", "0.02", "0.05"]), (3, 100, ["5", "10", "20", "50", "100"]),
    (0.0121, 0.0139, None)])  # narrower than any 1-2-5 tick: matplotlib's linear ones
def test_the_frontiers_log_axes_have_few_plain_labels(low, high, expected):
    fig = common.figure(7.0, 4.5)
    ax = fig.subplots()
    ax.plot([1, 2], [low, high])
    ax.set_yscale("log")
    reconstruction_sparsity._plain_log_ticks(ax.yaxis)
    fig.canvas.draw()
    bottom, top = ax.get_ylim()
    shown = [t.label1.get_text() for t in ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks()
             if t.label1.get_visible() and t.label1.get_text() and bottom <= t.get_loc() <= top]
    # not matplotlib's 6×10⁻² on every minor tick, which overlap
    assert shown == expected if expected else 3 <= len(shown) <= 8
    assert all(float(text) > 0 for text in shown)  # plain numbers


def test_the_learned_scale_runs_only_when_asked(tmp_path):
    for flag in ([], ["--learned-scale"]):
        ws = common.Workspace(common.parse_settings("run_all", "", CORE_ONLY + [
            "--out", str(tmp_path)] + flag, jobs=True))
        asked = bool(flag)
        assert (learned_scale in run_all.scripts_for(ws)) is asked
        assert common.core_keys(ws)[:2] == (("sparse", common.LEARNED_SCALE) if asked else
                                            ("sparse", "dense_abp"))
        assert set(common.core_keys(ws)) - {common.LEARNED_SCALE} == set(common.MODEL_KEYS)
        assert ws.seeds_of(common.LEARNED_SCALE) == ws.seeds == [0, 1]


def test_the_learned_scale_verdicts_follow_the_issues_rule():
    def entries(fid, mse):  # the learned scale's seed values; sparse: FID 10, zeroed MSE 1
        return {common.LEARNED_SCALE: {"seed_values": {"sample_fid": fid, "zeroed_mse": mse}},
                "sparse": {"seed_values": {"sample_fid": [10.0, 10.2, 9.8],
                                           "zeroed_mse": [1.0, 1.02, 0.98]}}}

    better_fid = [8.0, 8.1, 7.9]
    found = learned_scale.verdicts(entries(better_fid, [1.08, 1.10, 1.06]))  # 8 % worse
    assert found["sample_fid"]["verdict"] == "wins"
    assert found["zeroed_mse"]["verdict"] == "not worse"
    assert found["default"] == "make it the default"
    found = learned_scale.verdicts(entries(better_fid, [1.12, 1.14, 1.10]))  # 12 % worse
    assert found["zeroed_mse"]["verdict"] == "loses"
    assert found["default"] == "keep the annealed default"
    found = learned_scale.verdicts(entries([10.0, 10.1, 9.9], [0.9, 0.92, 0.88]))
    assert found["sample_fid"]["verdict"] == "not worse"  # no win on FID: no new default
    assert found["default"] == "keep the annealed default"


def test_the_learned_scale_against_sparse(tiny_run, tmp_path, capsys):
    # one seed (the encoding of each model's codes is most of the time; two seeds' verdicts
    # are the test above's)
    assert learned_scale.main(TINY + ["--out", str(tmp_path), "--runs", str(tiny_run),
                                      "--seeds", "1"]) == 0
    # the sparse model reused, the learned-scale one trained on its seed
    assert [p.name for p in (tmp_path / "models").iterdir()] == [common.LEARNED_SCALE]
    assert_filled((tmp_path / "learned_scale.md").read_text())
    numbers = json.loads((tmp_path / "learned_scale.json").read_text())["learned_scale"]
    for key, entry in numbers["models"].items():
        for field in learned_scale.FIELDS:
            values = entry["seed_values"][field]
            assert len(values) == 1, (key, field)
            if key == common.LEARNED_SCALE or not field.startswith("slab_"):
                assert_finite(entry[field], f"{key}.{field}")
    assert set(numbers["models"]) == {"sparse", common.LEARNED_SCALE}
    for field in ("sample_fid", "zeroed_mse"):
        assert numbers["verdicts"][field]["verdict"] == common.ONE_SEED
    assert numbers["verdicts"]["default"] == common.ONE_SEED
    state = psg.checkpoint.load(str(tmp_path / "models" / common.LEARNED_SCALE /
                                    "checkpoint.h5"))
    assert state.config["prior"]["kind"] == "learned-scale"
    assert state.model_state["slab_log_scale"].abs().min() > 0  # learned from log 1
    assert learned_scale.TITLE in capsys.readouterr().out


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


def test_bayes_denoise_runs_in_run_all_only_when_asked(tmp_path):
    for args, expected in ((TINY, False), (TINY + ["--bayes-denoise"], True),
                           (["--quick"], False), (["--quick", "--bayes-denoise"], True),
                           ([], True)):  # the full mode: always
        settings = common.parse_settings("run_all", "", args + ["--out", str(tmp_path)],
                                         jobs=True)
        assert settings.run_bayes_denoise is expected, args
        ws = types.SimpleNamespace(settings=settings, sweeps=True)
        assert (bayes_denoise in run_all.scripts_for(ws)) is expected, args


def test_bayes_denoise_alone_on_the_tiny_models(tiny_run, tmp_path, capsys):
    # the labelled variant on the tiny models (4 images, a token sampler: MODES["tiny"])
    assert bayes_denoise.main(TINY + ["--out", str(tmp_path), "--runs", str(tiny_run)]) == 0
    assert not (tmp_path / "models").exists()  # nothing trained again
    markdown = (tmp_path / "bayes_denoise.md").read_text()
    assert_filled(markdown)
    assert "a variant, not the authors' protocol" in capsys.readouterr().out
    numbers = json.loads((tmp_path / "bayes_denoise.json").read_text())
    assert set(numbers) == set(bayes_denoise.KEYS) | {"bayes_denoise"}
    for key in bayes_denoise.KEYS:
        for field, *_ in bayes_denoise.FIGURES:
            assert_finite(numbers[key][field], f"{key}.{field}")
            assert set(numbers[key][field]) == {"0.5", "0.7"}
            assert len(numbers[key]["seed_values"][field]["0.5"]) == 2  # one value per seed
        assert 0 <= numbers[key]["bayes_denoise_accuracy"]["0.7"] <= 1
        assert numbers[key]["bayes_denoise_seconds_per_image"]["0.5"] > 0
        conv = numbers[key]["bayes_denoise_convergence"]["0.7"]
        assert conv["max_rhat"] is not None and conv["nonfinite_images"] == 0
        assert set(numbers[key]["bayes_denoise_authors_protocol"]["0.5"]) == {
            "accuracy", "psnr", "ssim"}
    section = numbers["bayes_denoise"]
    assert section["settings"] == common.MODES["tiny"]["bayes_denoise"]
    for field, *_ in bayes_denoise.FIGURES:
        found = section["verdicts"][field]["0.5"]
        assert set(found) == {"dense_abp", "dense_matched"}
        assert all(v["n_seeds"] == 2 and v["interval"] is not None for v in found.values())
    # one noise draw per seed, the same for every model of that seed
    ws = workspace(tiny_run, tmp_path)
    clean, a = bayes_denoise.noisy_images(ws, 0, 0.5)
    assert np.array_equal(a, bayes_denoise.noisy_images(ws, 0, 0.5)[1])
    assert not np.array_equal(a, bayes_denoise.noisy_images(ws, 1, 0.5)[1])
    assert np.array_equal(clean, ws.test.subset(ws.spread(ws.test, 4)).images().numpy())
    assert len(set(ws.test.subset(ws.spread(ws.test, 4)).labels)) == 4  # class-spread


def test_finished_models_are_not_retrained(tiny_run, capsys):
    checkpoints = sorted((tiny_run / "models").glob("*/checkpoint.h5"))
    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    assert reconstruction_sparsity.main(TINY + ["--out", str(tiny_run)]) == 0
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
    assert "training" not in capsys.readouterr().err


def test_long_runs_train_each_length_and_check_the_inactive_fraction(tiny_run, tmp_path):
    ws = common.Workspace(common.parse_settings("test", "", TINY + [
        "--out", str(tmp_path), "--runs", str(tiny_run), "--long-runs"]))
    assert ws.long_runs() == [(4, "sparse_e4"), (5, "sparse_e5")]  # --tiny's lengths
    assert common.core_keys(ws)[:3] == ("sparse_e5", "sparse_e4", "sparse")
    assert long_runs in run_all.scripts_for(ws)
    with common.cpu_threads(ws.settings, ws.device):
        section = long_runs.run(ws)
    entries = section.results["long_runs"]
    for epochs in ("4", "5"):
        entry = entries[epochs]
        for seed in ws.seeds:  # its own run of that length, the schedule sized to it
            m = ws.model(entry["key"], seed)
            assert m.config.optim.epochs == int(epochs) and m.trained_seconds is not None
            assert entry["seed_values"]["inactive_fraction"][seed] == pytest.approx(
                ws.summary(entry["key"], seed)["inactive_fraction"])
        assert entry["verdict"] == common.threshold_verdict(
            entry["seed_values"]["inactive_fraction"], 0.85, at_least=True)
    assert "sparse_e5" in section.markdown() and common.label("sparse_e5") == \
        "sparse, 5 epochs"
    # a run of the mode's own length is the main sparse model
    ws.mode = dict(ws.mode, long_epochs=(3, 5))
    assert ws.long_runs() == [(3, "sparse"), (5, "sparse_e5")]


def test_a_recipe_under_test_retrains_what_it_changes(tiny_run, tmp_path):
    def ws(text=None):
        extra = []
        if text is not None:
            (tmp_path / "recipe.toml").write_text(text)
            extra = ["--config", str(tmp_path / "recipe.toml")]
        return common.Workspace(common.parse_settings("test", "", TINY + [
            "--out", str(tmp_path / "out"), "--runs", str(tiny_run)] + extra))

    def retrained(w):
        return {k for k in ("sparse", "dense_abp", "beta_vae", "vsc")
                for s in w.seeds if w.needs_training(k, s)}

    assert retrained(ws()) == set()  # the default's models are reused
    prior = ws("[prior]\nfinal_slab_weight = 0.5\ndense_fraction = 0.3\n")
    assert prior.base_config(1).prior.final_slab_weight == 0.5
    assert prior.base_config(1).seed == 1 and prior.base_config().optim.epochs == \
        common.MODES["tiny"]["epochs"]  # the seed and the mode's epochs stay the command's
    assert retrained(prior) == {"sparse"}  # the dense prior and the amortised models ignore it
    assert retrained(ws("[langevin]\nnum_steps = 7\n")) == {"sparse", "dense_abp"}


def test_a_record_from_before_a_new_setting_is_the_same_request(tiny_run, tmp_path):
    # a record written before prior.dense_fraction / slab_scale existed asks for their
    # defaults; one that asked for something else is not reused
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run / "models" / "dense_abp", runs / "dense_abp")
    record = runs / "dense_abp" / common.REQUEST
    request = json.loads(record.read_text())
    for key in ("dense_fraction", "slab_scale"):
        del request["config"]["prior"][key]
    record.write_text(json.dumps(request))
    ws = common.Workspace(common.parse_settings("test", "", TINY + [
        "--out", str(tmp_path / "out"), "--runs", str(runs)]))
    assert not ws.needs_training("dense_abp", 0)
    request["config"]["langevin"]["num_steps"] += 1
    record.write_text(json.dumps(request))
    assert ws.needs_training("dense_abp", 0)


def test_a_changed_default_schedule_retrains_the_sparse_models(tiny_run, tmp_path,
                                                              monkeypatch):
    # the preset's defaults are not config fields: the record holds the schedule as built
    ws = common.Workspace(common.parse_settings("test", "", TINY + [
        "--out", str(tmp_path / "out"), "--runs", str(tiny_run)]))
    assert not any(ws.needs_training(k, 0) for k in ("sparse", "dense_abp", "beta_vae"))
    monkeypatch.setitem(psg.config.DENSE_FRACTION, "default", 0.45)
    assert ws.needs_training("sparse", 0)
    assert not ws.needs_training("dense_abp", 0) and not ws.needs_training("beta_vae", 0)


def test_compare_recipes_tabulates_the_seed_verdicts(tiny_run, results, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    changed = json.loads(json.dumps(results))
    changed["meta"]["settings"]["recipe"] = {"prior": {"dense_fraction": 0.3}}
    changed["verdicts"]["denoise_accuracy"]["0.5"]["dense_matched"]["mean_difference"] = 0.123
    (other / "results.json").write_text(json.dumps(changed))
    assert compare_recipes.main([str(tiny_run), str(other), "--out", str(tmp_path / "c")]) == 0
    table = tables((tmp_path / "c" / "recipes.md").read_text())[0]
    assert [row[0] for row in table[1:]] == [f"`{tiny_run.name}`", "`other`"]
    assert table[1][1] == "default" and table[2][1] == "prior.dense_fraction = 0.3"
    column = table[0].index("σ 0.5 vs matched")
    own = results["verdicts"]["denoise_accuracy"]["0.5"]["dense_matched"]
    assert table[1][column] == common.fmt_verdict(own, 100.0, 1)
    assert table[2][column].startswith("+12.3 ± ")
    met = sum(1 for t in results["meta"]["targets"] if t["met"])
    assert table[1][-1].startswith(f"{met} of ")
    ratio = table[0].index("zeroed MSE / dense ABP test MSE ≤ 2")
    seeds = results["sparse"]["seed_values"]["zeroed_mse"], \
        results["dense_abp"]["seed_values"]["test_mse"]
    mean = np.mean([z / t for z, t in zip(*seeds)])
    assert table[1][ratio].startswith(f"{mean:.2f} ± ")
    assert (tmp_path / "c" / "recipes.png").stat().st_size > 0
    assert len(json.loads((tmp_path / "c" / "recipes.json").read_text())) == 2
    capsys.readouterr()
    # runs that do not compare, and a folder that is no run: one line each
    changed["meta"]["settings"]["mode"] = "quick"
    (other / "results.json").write_text(json.dumps(changed))
    for argv, message in (([str(tiny_run), str(other)], "mode 'quick' differs"),
                          ([str(tmp_path / "nothing")], "cannot read")):
        assert compare_recipes.main(argv + ["--out", str(tmp_path / "d")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("text, message", [
    ("[optim]\nepochs = 3\n", "optim.epochs is set by the mode"),
    ("seed = 4\n", "seed is set by --seed"),
    ("[data]\nspec = 'digits'\n", "data is set by --data"),
    ("[prior]\nslab_scale = -1.0\n", "prior.slab_scale must be a positive"),
    ("[prior]\nbogus = 1\n", "unknown keys in config section 'prior'"),
    ("[prior\n", "not valid TOML"),
])
def test_a_bad_recipe_is_one_line(text, message, tmp_path, capsys):
    (tmp_path / "recipe.toml").write_text(text)
    with pytest.raises(SystemExit) as caught:
        run_all.main(CORE_ONLY + ["--out", str(tmp_path / "out"), "--config",
                                  str(tmp_path / "recipe.toml")])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()  # refused before anything is written


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


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "--jobs must be positive"), (["--jobs", "two"], "invalid int value")])
def test_run_all_bad_jobs_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        # the tiny data: a check that let it through would fail fast, not start a long run
        run_all.main(CORE_ONLY + ["--out", str(tmp_path / "out")] + argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1 and message in err
    assert "--jobs" not in common.parser("x", "").format_help()  # run_all's alone


def test_script_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ANALYSES / "explainability.py"), "--out",
                           str(tmp_path), "--data", "no/such.npz"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": ""})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "explainability.py: error:" in proc.stderr
