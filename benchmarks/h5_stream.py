"""Peak memory while streaming an ``h5:`` data set larger than a memory budget.

Writes an HDF5 file of random uint8 images (default 400 MB), then reads every batch of its
training split through ``load_data("h5:...").batches`` twice (shuffled, then in order) — the
reads the training loop makes — and prints the process's peak RSS before and after. The last line is
``h5_stream_peak_rss_increase_mb=X`` (to compare with the file's size).

Run: ``python benchmarks/h5_stream.py [--mb 400] [--dir /tmp]``.
"""

import argparse
import os
import resource
import tempfile
import time

import h5py
import numpy as np


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400, help="file size in MB")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    n = args.mb * 1_000_000 // 784
    path = os.path.join(args.dir, "pyro_sparsegen_stream.h5")
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("images", (n, 28, 28), dtype=np.uint8, chunks=(256, 28, 28))
        for start in range(0, n, 50_000):
            stop = min(start + 50_000, n)
            ds[start:stop] = rng.integers(0, 256, (stop - start, 28, 28), dtype=np.uint8)
    try:
        import torch

        from pyro_sparsegen import load_data

        before = peak_rss_mb()
        data = load_data(f"h5:{path}", "train")
        start = time.perf_counter()
        for shuffle in (True, False):
            for _, x in data.batches(1000, shuffle=shuffle, seed=0):
                assert torch.isfinite(x).all()
        seconds = time.perf_counter() - start
        after = peak_rss_mb()
        print(f"file {os.path.getsize(path) / 1e6:.0f} MB, {len(data)} training images, "
              f"two passes in {seconds:.1f} s")
        print(f"peak RSS before {before:.0f} MB, after {after:.0f} MB")
        print(f"h5_stream_peak_rss_increase_mb={after - before:.0f}")
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
