"""Errors that are bugs stay bugs: the command line (and the analyses' scripts) print the
package's own errors and the operating system's in one line, exit 1 (2 for a usage error), and
anything else with its traceback and a line asking for a report, exit 70 (EX_SOFTWARE)."""

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyro_sparsegen import builders, cli
from pyro_sparsegen.checkpoint import CheckpointError
from pyro_sparsegen.config import ConfigError, ModelSpecError
from pyro_sparsegen.data import DataError
from pyro_sparsegen.errors import EXIT_SOFTWARE, SparsegenError
from pyro_sparsegen.abp import TrainingError

ANALYSES = Path(__file__).resolve().parent.parent / "analyses"


def _raising(error):
    def load_run(*args, **kwargs):
        raise error
    return load_run


@pytest.mark.parametrize("error, status", [
    (CheckpointError("checkpoint.h5: unreadable or damaged checkpoint"), 1),
    (ConfigError("optim.lr must be positive"), 1),
    (DataError("x.h5: no data set 'images'"), 1),
    (TrainingError("a non-finite loss before iteration 4"), 1),
    (OSError(errno.ENOSPC, "No space left on device", "run/checkpoint.h5"), 1),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "run"), 1),
    (ModelSpecError("--model m:f: no module named 'm'"), 2),
    (cli.UsageError("--num must be positive, got 0"), 2),
])
def test_a_users_error_is_one_line(error, status, monkeypatch, capsys, tmp_path):
    assert isinstance(error, (SparsegenError, OSError))
    monkeypatch.setattr(builders, "load_run", _raising(error))
    assert cli.main(["sample", str(tmp_path)]) == status
    err = capsys.readouterr().err
    assert err.startswith("pyro-sparsegen: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "report" not in err


@pytest.mark.parametrize("error", [ValueError("shapes [3] and [4] differ"), KeyError("z"),
                                   RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
                                   ZeroDivisionError("division by zero"), AssertionError()])
def test_a_bug_prints_its_traceback_and_asks_for_a_report(error, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(builders, "load_run", _raising(error))
    assert cli.main(["sample", str(tmp_path)]) == EXIT_SOFTWARE == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in load_run" in err and f"{type(error).__name__}" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pyro-sparsegen: internal error ({type(error).__name__}): this is "
                           "a bug in pyro_sparsegen") and "please report it" in last


def test_a_bug_from_the_command_line_exits_70(tmp_path):
    script = textwrap.dedent("""
        import sys
        from pyro_sparsegen import builders
        from pyro_sparsegen.cli import main

        def load_run(*args, **kwargs):
            return {}["missing"]  # a bug: KeyError

        builders.load_run = load_run
        sys.exit(main(sys.argv[1:]))
    """)
    proc = subprocess.run([sys.executable, "-c", script, "sample", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 70, proc.stderr
    assert "Traceback" in proc.stderr and "KeyError: 'missing'" in proc.stderr
    assert "please report it" in proc.stderr.strip().splitlines()[-1]


def test_the_analyses_scripts_sort_their_errors_alike(monkeypatch, capsys, tmp_path):
    sys.path.insert(0, str(ANALYSES))
    try:
        import common
    finally:
        sys.path.remove(str(ANALYSES))

    def bug(ws):
        return [][0]  # IndexError

    def users(ws):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.md"))

    argv = ["--data", "digits", "--tiny", "--device", "cpu", "--out", str(tmp_path)]
    assert common.main("script.py", bug, "a script", argv, save=False) == EXIT_SOFTWARE
    err = capsys.readouterr().err
    assert "Traceback" in err and "IndexError" in err
    assert err.strip().splitlines()[-1].startswith("script.py: internal error (IndexError)")
    assert common.main("script.py", users, "a script", argv, save=False) == 1
    err = capsys.readouterr().err
    assert err == f"script.py: error: [Errno {errno.ENOSPC}] No space left on device: " \
                  f"'{tmp_path / 'x.md'}'\n"
