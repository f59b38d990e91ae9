#!/usr/bin/env bash
# The GPU checks, in one call of at most 8 minutes (the timeouts below add up to 470 s), for a
# lent GPU machine (the `device` tool).
#
# The GPU image has torch but not pyro-ppl, pyro-api or arviz. Carry them as wheels (from the
# repository root, on the CPU machine, once):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp -d .whl pyro-ppl==1.9.2 pyro-api==0.1.2 arviz==0.23.4 \
#       xarray-einstats==0.9.1 h5netcdf==1.8.2 mlxtend==0.25.0 opt-einsum==3.4.0
# then run, through the device tool with carry [".whl"] and timeout_s 500:
#   bash benchmarks/gpu/run.sh
# What it prints (and writes under $OUT) goes into docs/benchmarks.md.
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

echo "== 1. the inference, model and training tests with the models and data on CUDA (120 s)"
PYRO_SPARSEGEN_TEST_DEVICE=cuda timeout 120 python3 -m pytest -q -x tests/test_infer_core.py \
    tests/test_infer_target.py tests/test_model.py tests/test_training.py 2>&1 | tail -5 \
    | tee "$OUT/tests.txt"

echo "== 2. no host-device synchronisation in a Langevin run or an ABP training step (40 s)"
timeout 40 python3 - <<'PY' 2>&1 | tee "$OUT/sync.txt"
import pyro, torch
import pyro_sparsegen as psg
model = psg.SparseGenerator(psg.MLPGenerator(100), schedule=psg.schedules.constant(0.5, 1, 0.04)).cuda()
x = torch.rand(100, 1, 28, 28, device="cuda")
kernel = psg.ShortRunLangevin(model, noise=False, prior_step="semi-implicit")
abp = psg.ABP(model, kernel, pyro.optim.Adam({"lr": 1e-3, "capturable": True}), num_data=4000)
for _ in range(12):                        # derivation and the checked runs (they read)
    abp.device_step(x)
torch.cuda.synchronize()
for name, call in (("infer(sync=False)", lambda: kernel.infer(x, sync=False)),
                   ("ABP.device_step", lambda: abp.device_step(x))):
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(7):                 # not a checked run among them
            call()
        print(name, ": no synchronisation in 7 calls")
    except RuntimeError as e:
        print(name, ": synchronised:", str(e).splitlines()[0])
    finally:
        torch.cuda.set_sync_debug_mode(0)
PY

echo "== 3. kernel step benchmark, the compiled step included (160 s)"
timeout 160 python3 benchmarks/kernel_step.py --device cuda --repeats 7 --budget 10 2>&1 \
    | tail -40 | tee "$OUT/kernel_step.txt"

echo "== 4. one training epoch against the hand-written loop (80 s)"
timeout 80 python3 benchmarks/train_epoch.py --device cuda --repeats 1 2>&1 | tail -6 \
    | tee "$OUT/train_epoch.txt"

echo "== 5. the default training run on mnist5k, timed (70 s)"
/usr/bin/time -v timeout 70 python3 -m pyro_sparsegen train --out "$OUT/run" --device cuda \
    --quiet 2>&1 | grep -E "done:|Elapsed|Maximum resident" | tee "$OUT/train.txt"
