import math
from pathlib import Path

import arviz as az
import numpy as np
import pytest
import torch
from diagnostics_examples import synthetic_idata, tiny_model

from pyro_sparsegen.diagnostics import report


# ------------------------------------------------------------------------------------------
# summary_tables


def test_summary_tables():
    text = report.summary_tables(synthetic_idata(), top=3)
    for heading in ("## Overall sparsity", "## Per-image inactive fraction",
                    "## Top 3 dimensions", "## Dead dimensions", "## Per-class usage",
                    "### Jaccard overlap", "## Convergence", "## Divergences"):
        assert heading in text
    assert "| abs(z) <= 0.2 | 0.633 |" in text  # (0.8 + 0.2 + 0.9) / 3
    assert "| inclusion | 2 | 2, 4 |" in text
    assert "| magnitude | 1 | 4 |" in text
    # by inclusion, class 0 uses {0} (latent 0 in half its images), class 1 uses {0, 1, 3}
    assert "Mean off-diagonal Jaccard: 0.333" in text


# ------------------------------------------------------------------------------------------
# analyze


def test_analyze_writes_everything(tmp_path):
    model = tiny_model()
    x = torch.rand(6, 1, 8, 8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    result = report.analyze(model, x, tmp_path / "out", labels=labels, chains=2, draws=20,
                            warmup=5, source="somewhere.h5", progress=False, tempering=None)
    for key in ("inactive_fraction_magnitude", "inactive_fraction_inclusion", "max_rhat"):
        assert 0.0 <= result[key] < math.inf
    # undefined (NaN) when no class has an active set, as in this untrained model
    assert math.isnan(result["class_jaccard"]) or 0.0 <= result["class_jaccard"] <= 1.0
    assert isinstance(result["converged"], bool)
    assert result["dead_dimensions"] >= 0 and result["divergences"] >= 0
    assert result["seconds"] > 0
    idata = az.from_netcdf(result["idata"])
    assert idata.posterior["z"].shape == (2, 20, 6, 8)
    assert idata.posterior.attrs["source"] == "somewhere.h5"
    text = Path(result["summary"]).read_text()
    assert "## Overall sparsity" in text and "Jaccard" in text
    assert set(result["figures"]) == {"code_usage", "class_usage", "sparsity_histogram",
                                      "rank", "trace", "spike_slab", "rhat"}
    for path in result["figures"].values():
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------
# The analysis script


def _script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "analyses" / "sparsity_diagnostics.py"
    spec = importlib.util.spec_from_file_location("sparsity_diagnostics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert _script().main(["--demo", "--images", "12", "--chains", "2", "--draws", "10",
                           "--warmup", "3", "--latent-dim", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "inactive_fraction_inclusion" in printed and "class_jaccard" in printed
    assert (out / "idata.nc").stat().st_size > 0 and (out / "summary.md").exists()
    assert az.from_netcdf(str(out / "idata.nc")).posterior["z"].shape == (2, 10, 12, 4)


def test_script_errors(tmp_path, capsys):
    script = _script()
    with pytest.raises(SystemExit) as e:
        script.main(["--demo", "--images", "0", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--images must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        script.main(["--out", str(tmp_path)])  # neither --run nor --demo
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        script.main(["--run", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert "sparsity_diagnostics:" in str(e.value.code)


# ------------------------------------------------------------------------------------------
# The one table formatter, the numbers computed once, the files written atomically


def test_format_number_and_markdown_table():
    assert report.format_number(3) == "3" and report.format_number(np.int64(7)) == "7"
    assert report.format_number(0.12345) == "0.123"
    assert report.format_number(0.12345, 1) == "0.1"
    assert report.format_number(float("nan")) == "n/a" and report.format_number(None) == "n/a"
    assert report.format_number(math.inf, missing="—") == "—"
    table = report.markdown_table(["|z|", "value"], [["a", 0.5], ["b", None],
                                                     ["c", np.float32(2)]], missing="—")
    assert table.splitlines() == ["| \\|z\\| | value |", "|---|---|", "| a | 0.500 |",
                                  "| b | — |", "| c | 2.000 |"]


def test_summary_tables_of_computed_metrics_are_the_same_text():
    idata = synthetic_idata()
    computed = report.report_metrics(idata, top=3)
    assert report.summary_tables(idata, computed=computed) == report.summary_tables(idata, top=3)


def test_analyze_computes_each_metric_once(tmp_path, monkeypatch):
    calls = []

    def counted(name):
        original = getattr(report, name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)
        return wrapper

    for name in ("convergence", "code_usage", "class_usage", "image_sparsity"):
        monkeypatch.setattr(report, name, counted(name))
    report.analyze(tiny_model(), torch.rand(4, 1, 8, 8), tmp_path, labels=[0, 1, 0, 1],
                   chains=2, draws=6, warmup=2, progress=False)
    # code usage once per criterion (inclusion, magnitude); everything else once
    assert sorted(calls) == ["class_usage", "code_usage", "code_usage", "convergence",
                             "image_sparsity"]


def test_analyze_writes_every_file_atomically(tmp_path, monkeypatch):
    from pyro_sparsegen import files

    written, atomic_file = [], files.atomic_file

    def recording(path, *args, **kwargs):
        written.append(Path(path))
        return atomic_file(path, *args, **kwargs)

    monkeypatch.setattr(files, "atomic_file", recording)
    out = tmp_path / "out"
    result = report.analyze(tiny_model(), torch.rand(4, 1, 8, 8), out, labels=[0, 1, 0, 1],
                            chains=2, draws=6, warmup=2, progress=False)
    paths = {result["idata"], result["summary"], *result["figures"].values()}
    assert set(written) == {Path(p) for p in paths}
    assert set(out.iterdir()) == {Path(p) for p in paths}  # no temporaries left


def test_a_tempered_analysis_shows_its_ladder_and_its_verdict_covers_it(tmp_path):
    model = tiny_model()
    x = torch.rand(3, 1, 8, 8)
    result = report.analyze(model, x, tmp_path / "out", chains=2, draws=10, warmup=8,
                            progress=False, tempering=4)
    assert "ladder" in result["figures"]
    idata = az.from_netcdf(result["idata"])
    ss = idata.sample_stats
    assert ss["swap_accept_prob"].dims == ("level_pair", "image")
    assert ss["swap_accept_prob"].shape == (3, 3)
    assert ss["round_trips"].dims == ("chain", "image") and ss["beta"].shape == (4, 3)
    assert ss["log_marginal_likelihood"].dims == ("image",)
    assert ss["level_log_likelihood"].dims == ("chain", "draw", "level", "image")
    text = Path(result["summary"]).read_text()
    assert "Replica exchange: 4 levels x 2 ladders" in text and "Evidence" in text
    assert idata.posterior.attrs["tempering"] == 4
