#!/usr/bin/env bash
# The GPU checks of issues 2 and 6, in one script, for a lent GPU machine (the `device` tool).
#
# The GPU image has torch but not pyro-ppl, pyro-api or arviz. Carry them as wheels (from the
# repository root, on the CPU machine, once):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp -d .whl pyro-ppl==1.9.2 pyro-api==0.1.2 arviz==0.23.4 \
#       xarray-einstats==0.9.1 h5netcdf==1.8.2 mlxtend==0.25.0 opt-einsum==3.4.0
# then run, through the device tool with carry [".whl"]:
#   bash benchmarks/gpu/run.sh
# What it prints (and writes under $OUT when set) goes into docs/benchmarks.md.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"

echo "== 1. the test suite with the models and data on CUDA"
PYRO_SPARSEGEN_TEST_DEVICE=cuda timeout 240 python3 -m pytest -q -x tests/test_kernels.py \
    tests/test_model.py tests/test_training.py 2>&1 | tail -5 | tee "$OUT/tests.txt"

echo "== 2. no host-device synchronisation inside the Langevin loop"
timeout 60 python3 - <<'PY' 2>&1 | tee "$OUT/sync.txt"
import torch, warnings
import pyro_sparsegen as psg
model = psg.SparseGenerator(psg.MLPGenerator(100), schedule=psg.schedules.constant(0.5, 1, 0.04)).cuda()
x = torch.rand(100, 1, 28, 28, device="cuda")
for prior_step in ("explicit", "semi-implicit"):
    kernel = psg.ShortRunLangevin(model, noise=True, prior_step=prior_step)
    kernel.infer(x)                       # warm-up: the structure is traced once
    torch.cuda.set_sync_debug_mode("error")
    try:
        kernel.infer(x)
        print(prior_step, "infer: no synchronisation in", kernel.num_steps, "steps")
    except RuntimeError as e:
        print(prior_step, "infer synchronised:", str(e).splitlines()[0])
    finally:
        torch.cuda.set_sync_debug_mode(0)
PY

echo "== 3. kernel step benchmark"
timeout 180 python3 benchmarks/kernel_step.py --device cuda 2>&1 | tail -15 | tee "$OUT/kernel_step.txt"

echo "== 4. one training epoch against the hand-written loop"
timeout 180 python3 benchmarks/train_epoch.py --device cuda --repeats 2 2>&1 | tail -5 | tee "$OUT/train_epoch.txt"

echo "== 5. the default training run on mnist5k, timed"
/usr/bin/time -v timeout 300 python3 -m pyro_sparsegen train --out "$OUT/run" --device cuda --quiet \
    2>&1 | grep -E "done:|Elapsed|Maximum resident" | tee "$OUT/train.txt"
