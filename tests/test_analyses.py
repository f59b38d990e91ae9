"""The scripts in ``analyses/``: each one's quick path on a tiny subset (the hidden ``--tiny``
flag: 200 + 100 scikit-learn digits, latent size 6, three short epochs), reusing one set of
models trained by ``run_all.py``."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ANALYSES = Path(__file__).resolve().parent.parent / "analyses"
sys.path.insert(0, str(ANALYSES))

import classify_codes  # noqa: E402
import common  # noqa: E402
import denoise_classify  # noqa: E402
import denoise_quality  # noqa: E402
import explainability  # noqa: E402
import reconstruction_sparsity  # noqa: E402
import run_all  # noqa: E402

SCRIPTS = (reconstruction_sparsity, denoise_classify, denoise_quality, classify_codes,
           explainability)
FIELDS = ("test_mse", "zeroed_mse", "inactive_fraction", "denoise_accuracy", "probe_accuracy")
TINY = ["--data", "digits", "--tiny", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run_all")
    assert run_all.main(TINY + ["--out", str(out)]) == 0
    return out


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


def test_run_all_writes_report_and_results(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    for key in common.MODEL_KEYS:
        for field in FIELDS:
            assert_finite(results[key][field], f"{key}.{field}")
        assert set(results[key]["denoise_accuracy"]) == {"0.3", "0.5", "0.7"}
        assert set(results[key]["probe_accuracy"]) == {"100", "all"}
        assert 0 <= results[key]["inactive_fraction"] <= 1
    # the Jaccard overlap is undefined (null) only when no class has an active set
    jaccards = {}
    for key in common.MODEL_KEYS:
        jac = results[key]["class_jaccard"]
        if jac is None:
            assert results[key]["empty_class_sets"] == 10, key
        else:
            assert 0 <= jac <= 1, key
            jaccards[key] = jac
    assert jaccards, "no model has a defined class overlap"
    assert results["meta"]["settings"]["mode"] == "tiny"
    report = (tiny_run / "report.md").read_text()
    assert_filled(report)
    for script in SCRIPTS:
        assert script.TITLE in report
    figures = [line[line.index("](") + 2:-1] for line in report.splitlines()
               if line.startswith("![")]
    assert len(figures) >= 14
    for path in figures:
        assert (tiny_run / path).stat().st_size > 0, path
    # matched budget: the sparse model's mean number of active coordinates, at least 1
    sparse_active = results["sparse"]["mean_active"]
    assert results["dense_matched"]["latent_dim"] == max(1, round(sparse_active))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.NAME)
def test_script_alone_reuses_models(script, tiny_run, tmp_path, capsys):
    assert script.main(TINY + ["--out", str(tmp_path), "--runs", str(tiny_run)]) == 0
    assert not (tmp_path / "models").exists()  # nothing trained again
    markdown = (tmp_path / f"{script.NAME}.md").read_text()
    assert_filled(markdown)
    assert script.TITLE in capsys.readouterr().out
    numbers = json.loads((tmp_path / f"{script.NAME}.json").read_text())
    assert set(common.MODEL_KEYS) <= set(numbers)


def test_finished_models_are_not_retrained(tiny_run, capsys):
    checkpoints = sorted((tiny_run / "models").glob("*/checkpoint.h5"))
    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    assert reconstruction_sparsity.main(TINY + ["--out", str(tiny_run)]) == 0
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
    assert "training" not in capsys.readouterr().err


def test_sweep_has_default_and_one_more_weight(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    sweep = results["meta"]["sweep"]
    assert "sparse" in sweep and len(sweep) == 2
    for entry in sweep.values():
        assert_finite(entry["test_mse"], "sweep test_mse")


@pytest.mark.parametrize("argv, status, message", [
    (["--out"], 2, "expected one argument"),
    (["--out", "X", "--bogus"], 2, "unrecognized arguments"),
    (["--out", "X", "--runs", "/no/such/folder"], 2, "no such folder"),
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
