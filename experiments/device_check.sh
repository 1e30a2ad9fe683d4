#!/usr/bin/env bash
# One prepared check of sagan_jax on a GPU machine (an NVIDIA H100 or H200, say) whose Python
# has jax with CUDA, flax, optax, orbax and torch, possibly without tensorflow or a network:
# copy the repository there with workdirs/device_carry (made by --prepare) and run it.
#
# Stages (each under its own time limit, so a slow stage cannot eat the others' time; a
# stage's failure is recorded, never fatal):
#   0 info        GPU, driver, Python and package versions, JAX devices, torch CUDA
#   1 tests       a GPU-relevant subset of the test suite (run axis, training step, layers)
#                 on the GPU (JAX_PLATFORMS=cuda), junit XML
#   2 frameworks  one SAGAN training step and scoring batch, JAX vs PyTorch on CUDA, ngf 64,
#                 kernels_per_layer 2 and 1 (bench_train's JAX worker; PyTorch's TorchTrainer
#                 moved to the GPU here, since bench_train runs PyTorch on the CPU only)
#   3 run_axis    python -m experiments.benchmarks.bench_runs, K = 1, 2, 4, 8, 10 runs in one program
#                 (vmap) against K processes, and the step with and without lax.scan
#   4 control_flow  python -m experiments.benchmarks.bench_control_flow: the training step alone, inside
#                 lax.cond, inside lax.scan and in the loop's chunk program (XLA:CPU runs the
#                 step 25x slower inside control flow; does the GPU?)
#   5 paper       one paper-protocol class: CIFAR-10 (a JPEG copy, split/class/NNNN.jpg, image_folder),
#                 bird abnormal, 45,000 normal training images, 15 epochs: wall time and AUC
# Everything goes to $OUT/device_check.log; results to $OUT/device_check.json and .md, with
# tests.xml, frameworks.jsonl, bench_runs.json and paper_metrics.json beside them (7 files).
# Planned end times sum to DEVICE_CHECK_BUDGET_S (470 s), so it fits a 10-minute slot.
#
# Usage
#   bash experiments/device_check.sh --prepare   # here: copy the CIFAR-10 archive (and the
#                                                # tensorboardX wheel) to workdirs/device_carry
#   bash experiments/device_check.sh             # on the GPU machine, in the copied repository
#   bash experiments/device_check.sh --smoke     # the same stages on this CPU at tiny sizes
#                                                # (tests/test_device_check.py runs it)
# Options: --archive PATH (CIFAR-10 JPEG tar.gz; default workdirs/device_carry/ or
# ~/.cache/sagan_jax/cifar10_jpg.tar.gz), --out DIR (default $OUT, else
# workdirs/device_check). Environment: PYTHON (interpreter), DEVICE_CHECK_WORK (scratch folder),
# DEVICE_CHECK_BUDGET_S (whole-script time budget, seconds).
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
MODE=device
ARCHIVE=""
OUTDIR="${OUT:-}"
CARRY=workdirs/device_carry
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) MODE=smoke ;;
    --prepare) MODE=prepare ;;
    --archive) ARCHIVE="$2"; shift ;;
    --archive=*) ARCHIVE="${1#*=}" ;;
    --out) OUTDIR="$2"; shift ;;
    --out=*) OUTDIR="${1#*=}" ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "device_check: error: unknown argument $1 (use --smoke, --prepare, --archive, --out)" >&2; exit 2 ;;
  esac
  shift
done

find_archive() {
  local a
  for a in "$ARCHIVE" "$ROOT/$CARRY/cifar10_jpg.tar.gz" "$HOME/.cache/sagan_jax/cifar10_jpg.tar.gz"; do
    if [ -n "$a" ] && [ -f "$a" ]; then echo "$a"; return 0; fi
  done
  return 1
}

# --- prepare (on the development machine, before copying the repository to the GPU one) -----
if [ "$MODE" = prepare ]; then
  mkdir -p "$CARRY/wheels"
  src=$(ARCHIVE="$ARCHIVE" find_archive) || { echo "device_check: no cifar10_jpg.tar.gz found (pass --archive)" >&2; exit 2; }
  [ "$src" -ef "$CARRY/cifar10_jpg.tar.gz" ] || cp "$src" "$CARRY/cifar10_jpg.tar.gz"
  PY=${PYTHON:-python3}; [ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
  # The GPU image has no tensorboardX (a pure-Python wheel; the tests' default runs log to it).
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$CARRY/wheels" tensorboardX==2.6.5 \
    || echo "device_check: could not fetch the tensorboardX wheel; tests that log to TensorBoard will fail there" >&2
  du -sh "$CARRY"
  echo "now copy the repository with $CARRY to the GPU machine and run bash experiments/device_check.sh there"
  exit 0
fi

# --- set-up ----------------------------------------------------------------------------------
OUTDIR=${OUTDIR:-$ROOT/workdirs/device_check}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=${DEVICE_CHECK_WORK:-$(mktemp -d /tmp/device_check.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOG=$OUTDIR/device_check.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
STAGES=$WORK/stages.tsv
: >"$STAGES"
T0=$(date +%s)
if [ "$MODE" = smoke ]; then BUDGET=${DEVICE_CHECK_BUDGET_S:-1500}; else BUDGET=${DEVICE_CHECK_BUDGET_S:-470}; fi
echo "device_check ($MODE) $(date -u '+%Y-%m-%d %H:%M:%S UTC'): repo $ROOT, out $OUTDIR, scratch $WORK, budget ${BUDGET}s"

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import jax" 2>/dev/null; then PY=$ROOT/.venv/bin/python
else PY=python3; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export JAX_COMPILATION_CACHE_DIR=$WORK/xla_cache
if [ "$MODE" = smoke ]; then export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}; fi
if ! "$PY" -c "import tensorboardX" 2>/dev/null && ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$CARRY"/wheels/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
HAVE_TORCH=0; "$PY" -c "import torch" 2>/dev/null && HAVE_TORCH=1
echo "python: $PY ($("$PY" --version 2>&1)); torch importable: $HAVE_TORCH"

# Sizes per mode.
if [ "$MODE" = smoke ]; then
  TESTS=(tests/test_runs.py::test_run_planning)
  # tiny and quick to compile on a CPU: one fixed DSC implementation (no autotuning), the
  # run axis unrolled (XLA:CPU compiles and runs vmap's grouped convolutions slowly)
  FW_ARGS=(--ngf 16 --isize 16 --batch 8 --steps 1 --eval_batches 1 --repeats 1 --kpls 2
           --dsc_impl shift)
  RUNS_ARGS=(--ks 1,2 --separate_ks 1 --no-scan --impl auto --ngf 16 --isize 16 --batch_size 16
             --steps 4 --epochs 1 --chunk 1 --recal_batches 1 --no-warmup --set dsc_impl=shift)
  PAPER_ARGS=(--epochs=1 --max_train_images=32 --batch_size=16 --eval_batch_size=16 --ngf=16
              --ndf=16 --nz=16 --isize=16 --bn_recalibration_batches=1 --dsc_impl=shift)
  CF_ARGS=(--ngf 16 --isize 16 --batch 4 --repeats 1 --variants alone --dsc_impl shift)
  PLAN=(tests:120 frameworks:420 run_axis:800 control_flow:900 paper:1300)   # planned end, s from the start
else
  # the run axis (vmap on the GPU), the step, the layers (DSC implementations, BatchNorm);
  # not the tests that start CPU subprocesses. -v: per-test lines in the log, read back if the
  # stage's time runs out before the junit XML is written.
  TESTS=(-v -k "not cli and not exit_2 and not two_device" tests/test_runs.py
         tests/test_training.py tests/test_layers.py)
  FW_ARGS=(--ngf 64 --isize 32 --batch 64 --steps 20 --eval_batches 20 --repeats 3 --kpls 2,1)
  # --order curve: the one-program runs for K = 1..10 first (the curve), then K processes,
  # then the lax.scan comparison, as far as the stage's time goes
  RUNS_ARGS=(--ks 1,2,4,8,10 --impl vmap --ngf 64 --isize 32 --batch_size 64 --steps 20
             --epochs 3 --chunk 20 --recal_batches 2 --no-warmup --order curve)
  PAPER_ARGS=()
  CF_ARGS=(--ngf 64 --batch 64 --repeats 3 --scan_steps 2)
  PLAN=(tests:65 frameworks:150 run_axis:285 control_flow:335 paper:465)
fi

# Planned end of a stage scaled to the budget; the timeout a stage gets runs to its planned end
# (time an earlier stage left unused flows on), leaving each later stage at least 20 s.
planned_end() {
  local i=0 name end
  for item in "${PLAN[@]}"; do
    name=${item%%:*}; end=${item##*:}
    if [ "$name" = "$1" ]; then
      echo $(( end * BUDGET / ${PLAN[-1]##*:} )) $(( ${#PLAN[@]} - i - 1 )); return
    fi
    i=$((i + 1))
  done
}
stage_timeout() {
  local end later now left
  read -r end later <<<"$(planned_end "$1")"
  now=$(( $(date +%s) - T0 ))
  left=$(( BUDGET - now - 20 * later - 5 ))
  local t=$(( end - now ))
  [ "$t" -gt "$left" ] && t=$left
  [ "$t" -lt 10 ] && t=10
  echo "$t"
}
# record NAME STATUS RC SECONDS NOTE
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >>"$STAGES"; }
# run_stage NAME COMMAND...: under the stage's timeout (its whole process group), logged
run_stage() {
  local name=$1; shift
  local t s rc status
  t=$(stage_timeout "$name")
  echo; echo "=== stage $name (timeout ${t}s) $(date -u +%H:%M:%S): $*"
  s=$(date +%s)
  timeout -k 10 "$t" "$@"
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status=timed_out ;; *) status=failed ;; esac
  record "$name" "$status" "$rc" $(( $(date +%s) - s )) "timeout ${t}s"
  echo "=== stage $name: $status (exit $rc, $(( $(date +%s) - s ))s)"
  return 0
}

# --- stage 0: info ---------------------------------------------------------------------------
echo; echo "=== stage info"
s=$(date +%s)
(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv) || echo "no nvidia-smi"
"$PY" - "$WORK/info.json" <<'EOF'
import importlib.metadata as md, json, os, platform, sys
info = {"python": platform.python_version(), "executable": sys.executable,
        "cpus": os.cpu_count(), "packages": {}}
for p in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
          "orbax-checkpoint", "numpy", "torch", "scikit-learn", "pillow", "tensorboardX"):
    try:
        info["packages"][p] = md.version(p)
    except md.PackageNotFoundError:
        pass
try:
    import jax
    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = [str(d) for d in jax.devices()]
    info["jax_device_kind"] = jax.devices()[0].device_kind
except Exception as e:  # noqa: BLE001
    info["jax_error"] = f"{type(e).__name__}: {e}"
try:
    import torch
    info["torch_cuda"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        info["torch_device"] = torch.cuda.get_device_name(0)
except Exception as e:  # noqa: BLE001
    info["torch_error"] = f"{type(e).__name__}: {e}"
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info, indent=1))
EOF
rc=$?
record info "$([ $rc -eq 0 ] && echo ok || echo failed)" "$rc" $(( $(date +%s) - s )) ""

# CIFAR-10 JPEG copy for stage 4: the whole archive on the device; in the smoke test 4 images
# per class and split (a synthetic archive of that layout when none is found).
DATA=$WORK/cifar10_jpg
src=$(find_archive) || src=""
if [ -z "$src" ] && [ "$MODE" = smoke ]; then
  src=$WORK/synthetic_cifar10_jpg.tar.gz
  "$PY" - "$src" <<'EOF'
import io, sys, tarfile
import numpy as np
from PIL import Image
classes = "airplane automobile bird cat deer dog frog horse ship truck".split()
rng = np.random.default_rng(0)
with tarfile.open(sys.argv[1], "w:gz") as tar:
    for split in ("train", "test"):
        for c in classes:
            for i in range(4):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
                info = tarfile.TarInfo(f"{split}/{c}/{i:04d}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
EOF
fi
if [ -n "$src" ]; then
  mkdir -p "$DATA"
  s=$(date +%s)
  if [ "$MODE" = smoke ]; then
    tar -xzf "$src" -C "$DATA" --wildcards '*/000[0-3].jpg'
  else
    tar -xzf "$src" -C "$DATA"
  fi
  echo "unpacked $src into $DATA ($(find "$DATA" -name '*.jpg' | wc -l) images, $(( $(date +%s) - s ))s)"
else
  echo "no cifar10_jpg.tar.gz (pass --archive, or carry $CARRY): stage paper will be skipped"
fi

# --- stage 1: tests --------------------------------------------------------------------------
if [ "$MODE" = device ]; then TEST_PLATFORM=${JAX_PLATFORMS:-cuda}; else TEST_PLATFORM=$JAX_PLATFORMS; fi
run_stage tests env JAX_PLATFORMS="$TEST_PLATFORM" "$PY" -m pytest -q -p no:cacheprovider \
  -rfE --junitxml="$OUTDIR/tests.xml" "${TESTS[@]}"

# --- stage 2: JAX vs PyTorch, one step ---------------------------------------------------------
: >"$OUTDIR/frameworks.jsonl"
if [ "$HAVE_TORCH" = 1 ]; then FWS=jax,torch; else FWS=jax; echo "torch is not installed: stage frameworks runs JAX only"; fi
run_stage frameworks "$PY" "$ROOT/experiments/device/frameworks.py" "${FW_ARGS[@]}" --frameworks "$FWS" \
  --out "$OUTDIR/frameworks.jsonl"

# --- stage 3: the run axis -----------------------------------------------------------------------
t=$(stage_timeout run_axis)
run_stage run_axis "$PY" -m experiments.benchmarks.bench_runs "${RUNS_ARGS[@]}" --workdir "$WORK/bench_runs" \
  --json "$OUTDIR/bench_runs.json" --md "$WORK/bench_runs.md" --no-write --wait_quiet 0 \
  --budget_s $(( t * 3 / 4 )) --proc_timeout_s "$t"

# --- stage 4: the step inside control flow -------------------------------------------------------
run_stage control_flow "$PY" -m experiments.benchmarks.bench_control_flow "${CF_ARGS[@]}" --no-write \
  --wait_quiet 0 --md "$WORK/control_flow.md"

# --- stage 5: one paper-protocol class -----------------------------------------------------------
if [ -d "$DATA/train" ]; then
  run_stage paper "$PY" -m sagan_jax.main --flagfile=experiments/cifar10_paper.cfg \
    --dataset=image_folder --data_root="$DATA" --abnormal_class=bird --workdir="$WORK/paper" \
    --noprogress --notensorboard --noplots "${PAPER_ARGS[@]}"
else
  record paper skipped "" 0 "no CIFAR-10 archive"
fi

# --- report ------------------------------------------------------------------------------------
"$PY" "$ROOT/experiments/device/report.py" "$MODE" "$WORK" "$OUTDIR" "$T0" "$BUDGET"
echo "device_check: done in $(( $(date +%s) - T0 ))s; results in $OUTDIR/device_check.json and .md"
if awk -F'\t' '$2 == "failed" || $2 == "timed_out" {f = 1} END {exit !f}' "$STAGES"; then exit 1; fi
exit 0
