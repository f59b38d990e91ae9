"""Damaged files: a checkpoint or codes file truncated at, or with a byte flipped at, any of
hundreds of random offsets (fixed seed) is always a one-line error or a correct load — never a
traceback, a crash, a hang or a silently different model: the SHA-256 in the HDF5 user block
is checked before libhdf5 reads a byte. A user's own HDF5 data set carries no checksum: for it,
one line or a load. Every load runs in one subprocess under a watchdog (a hang or a crash of
the C library fails the test instead of stalling the suite)."""

import json
import subprocess
import sys
import textwrap
import warnings

import h5py
import numpy as np
import pytest
import torch

from pyro_sparsegen import SparseGenerator, builders, checkpoint, load_codes, save_codes
from pyro_sparsegen.files import USERBLOCK, DamagedFileError, UnverifiedWarning
from pyro_sparsegen.networks import MLPGenerator

SEED = 21
OFFSETS = 120  # per file and kind of damage: 2 x 120 for checkpoints, as many for codes
WATCHDOG_S = 240

# Loads every damaged copy in one process; one JSON line per load, written as it goes (so a
# hang or a crash shows which one).
SWEEP = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    import torch
    from pyro_sparsegen import checkpoint, load_codes, load_data
    from pyro_sparsegen.errors import SparsegenError, first_line

    kind, original, damaged, todo, log = sys.argv[1:]
    data = open(original, "rb").read()
    if kind == "checkpoint":
        expected = checkpoint.load(original).model_state
    elif kind == "codes":
        expected = load_codes(original)[0]
    else:
        expected = load_data("h5:" + original, "all").images()
    warnings.simplefilter("error")  # a warning would be a load that is not clean

    def same(loaded):
        return set(loaded) == set(expected) and all(
            np.array_equal(np.asarray(loaded[k]), np.asarray(expected[k])) for k in expected)

    with open(log, "w", buffering=1) as out:
        for damage, offset in json.load(open(todo)):
            bad = bytearray(data[:offset]) if damage == "truncate" else bytearray(data)
            if damage == "flip":
                bad[offset] ^= 1 << (offset % 8)
            open(damaged, "wb").write(bad)
            try:
                if kind == "checkpoint":
                    outcome = "same" if same(checkpoint.load(damaged).model_state) else "differs"
                elif kind == "codes":
                    outcome = "same" if same(load_codes(damaged)[0]) else "differs"
                else:  # a user's data set: any load is fine, a value is not checked
                    load_data("h5:" + damaged, "all").images()
                    outcome = "loaded"
                message = ""
            except (SparsegenError, OSError) as e:
                outcome, message = "error", f"{type(e).__name__}: {e}"
                if first_line(e) != str(e).strip():
                    outcome = "error of many lines"
            except Exception as e:  # noqa: BLE001 - reported to the parent
                outcome, message = "other error", f"{type(e).__name__}: {e}"
            out.write(json.dumps([damage, offset, outcome, message]) + "\\n")
""")


def tiny_checkpoint(path):
    model = SparseGenerator(MLPGenerator(3, (1, 4, 4), hidden=(5,)))
    checkpoint.save(path, model=model, config={"seed": 0}, progress={"epoch": 1},
                    metrics=[{"epoch": 1, "test_mse": 0.1}])
    return path


def tiny_codes(path):
    rng = np.random.default_rng(0)
    save_codes(path, {"z": rng.normal(size=(40, 3)).astype(np.float32),
                      "mse": rng.random(40).astype(np.float32),
                      "labels": rng.integers(0, 10, 40)}, source="checkpoint.h5", split="test")
    return path


def users_data_set(path):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["images"] = rng.integers(0, 256, size=(30, 1, 4, 4), dtype=np.uint8)
        f["labels"] = rng.integers(0, 10, 30)
    return path


def damages(size, n, seed):
    """``n`` flips anywhere and ``n`` truncations (at 0 .. size-1), at random offsets."""
    rng = np.random.default_rng(seed)
    return [["flip", int(o)] for o in rng.integers(0, size, n)] + \
        [["truncate", int(o)] for o in rng.integers(0, size, n)]


def sweep(kind, original, tmp_path, n, seed):
    todo, log = tmp_path / f"{kind}.todo.json", tmp_path / f"{kind}.log"
    size = len(original.read_bytes())
    todo.write_text(json.dumps(damages(size, n, seed)))
    try:
        proc = subprocess.run([sys.executable, "-c", SWEEP, kind, str(original),
                               str(tmp_path / f"damaged-{kind}.h5"), str(todo), str(log)],
                              capture_output=True, text=True, timeout=WATCHDOG_S)
    except subprocess.TimeoutExpired:
        done = log.read_text().splitlines() if log.exists() else []
        pytest.fail(f"{kind}: the loads hung after {len(done)} of {2 * n} damaged copies")
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert proc.returncode == 0, (f"{kind}: the loading process died (status "
                                  f"{proc.returncode}) after {len(lines)} loads: "
                                  f"{proc.stderr[-1500:]}")
    assert len(lines) == 2 * n
    return size, lines


@pytest.mark.parametrize("kind, make", [("checkpoint", tiny_checkpoint), ("codes", tiny_codes)])
def test_a_damaged_file_is_one_line_or_a_correct_load(kind, make, tmp_path):
    original = make(tmp_path / f"{kind}.h5")
    size, lines = sweep(kind, original, tmp_path, OFFSETS, SEED)
    outcomes = {}
    for damage, offset, outcome, message in lines:
        outcomes.setdefault(outcome, []).append((damage, offset, message))
    assert set(outcomes) <= {"error", "same"}, {k: v[:3] for k, v in outcomes.items()
                                                if k not in ("error", "same")}
    # with the whole file checksummed, no damaged copy loads at all
    assert len(outcomes["error"]) == 2 * OFFSETS, outcomes.get("same")
    for damage, offset, message in outcomes["error"]:
        assert "damaged" in message or "not a pyro_sparsegen" in message, (damage, offset,
                                                                           message)
    print(f"{kind} ({size} bytes): {len(lines)} damaged copies, "
          f"{len(outcomes['error'])} one-line errors")


def test_a_users_data_set_damaged_is_one_line_or_a_load(tmp_path):
    original = users_data_set(tmp_path / "users.h5")
    size, lines = sweep("data", original, tmp_path, 60, SEED)
    counts = {}
    for damage, offset, outcome, message in lines:
        counts[outcome] = counts.get(outcome, 0) + 1
        assert outcome in ("error", "loaded"), (damage, offset, outcome, message)
    assert counts.get("error", 0) > 0 and counts.get("loaded", 0) > 0, counts
    print(f"a user's data set ({size} bytes): {counts}")


def test_the_checksum_covers_the_whole_file(tmp_path):
    path = tiny_checkpoint(tmp_path / "checkpoint.h5")
    data = path.read_bytes()
    assert data[USERBLOCK:USERBLOCK + 8] == b"\x89HDF\r\n\x1a\n" and data.startswith(
        b"pyro_sparsegen sha256 v1\n")
    assert checkpoint.load(path).verified
    for offset in (0, 40, USERBLOCK - 1, USERBLOCK, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[offset] ^= 0x10
        path.write_bytes(bad)
        with pytest.raises(checkpoint.CheckpointError, match="damaged|not a pyro_sparsegen"):
            checkpoint.load(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(checkpoint.CheckpointError, match="truncated or extended"):
        checkpoint.load(path)


def _write_format_2(path, monkeypatch):
    """A checkpoint as format version 2 wrote it: no user block, no checksum."""
    def unsealed(path, fill, before_replace=None):
        with h5py.File(path, "w") as f:
            fill(f)

    monkeypatch.setattr(checkpoint, "write_sealed_h5", unsealed)
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 2)
    torch.manual_seed(0)
    tiny_checkpoint(path)
    monkeypatch.undo()


def test_a_file_written_before_checksums_loads_with_one_warning(tmp_path, monkeypatch):
    old, new = tmp_path / "old" / "checkpoint.h5", tmp_path / "new" / "checkpoint.h5"
    old.parent.mkdir(), new.parent.mkdir()
    _write_format_2(old, monkeypatch)
    torch.manual_seed(0)
    tiny_checkpoint(new)
    assert old.read_bytes().startswith(b"\x89HDF")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = checkpoint.load(old)
        model, _, _ = builders.load_run(old.parent)
    unverified = [w for w in caught if issubclass(w.category, UnverifiedWarning)]
    assert len(unverified) == 2 and not set(caught) - set(unverified)  # one a load
    assert "loaded unverified" in str(unverified[0].message)
    assert state.format_version == 2 and not state.verified
    expected = checkpoint.load(new)
    assert expected.verified
    for key, value in expected.model_state.items():
        assert torch.equal(state.model_state[key], value), key
    # a file that says format 3 but carries no checksum is damaged, not old
    with h5py.File(old, "r+") as f:
        f.attrs["format_version"] = 3
    with pytest.raises(checkpoint.CheckpointError, match="without its checksum"):
        checkpoint.load(old)


def test_codes_written_before_checksums_load_with_one_warning(tmp_path):
    path = tmp_path / "codes.h5"
    with h5py.File(path, "w") as f:
        f["z"] = np.ones((2, 3), dtype=np.float32)
        f.attrs["split"] = "test"
    with pytest.warns(UnverifiedWarning, match="codes.h5: written before"):
        codes, attrs = load_codes(path)
    assert codes["z"].shape == (2, 3) and attrs["split"] == "test"
    path.write_bytes(b"\0" * 600)
    with pytest.raises(DamagedFileError, match="codes.h5: not a pyro_sparsegen codes file"):
        load_codes(path)
