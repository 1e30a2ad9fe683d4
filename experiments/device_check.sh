#!/usr/bin/env bash
# One prepared check of sagan_jax on a GPU machine: an NVIDIA H200 with its
# preinstalled Python (jax, flax, optax, orbax, torch; no tensorflow, no network), reached
# through the session's device tool with the working tree and `carry`d files (<= 64 MiB).
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
#   5 paper       one paper-protocol class: CIFAR-10 (the shared JPEG copy, image_folder),
#                 bird abnormal, 45,000 normal training images, 15 epochs: wall time and AUC
# Everything goes to $OUT/device_check.log; results to $OUT/device_check.json and .md, with
# tests.xml, frameworks.jsonl, bench_runs.json and paper_metrics.json beside them (7 files:
# the device tool returns at most 8). Planned end times sum to DEVICE_CHECK_BUDGET_S (470 s).
#
# Usage
#   bash experiments/device_check.sh --prepare   # here: copy the CIFAR-10 archive (and the
#                                                # tensorboardX wheel) to workdirs/device_carry
#   then the device tool: run(command="bash experiments/device_check.sh",
#                             carry=["workdirs/device_carry"], timeout_s=600)
#   bash experiments/device_check.sh --smoke     # the same stages on this CPU at tiny sizes
#                                                # (tests/test_device_check.py runs it)
# Options: --archive PATH (CIFAR-10 JPEG tar.gz), --out DIR (default $OUT, else
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
  for a in "$ARCHIVE" "$ROOT/$CARRY/cifar10_jpg.tar.gz" "$ROOT/shared/data/cifar10_jpg.tar.gz" \
           "$ROOT/../shared/data/cifar10_jpg.tar.gz"; do
    if [ -n "$a" ] && [ -f "$a" ]; then echo "$a"; return 0; fi
  done
  return 1
}

# --- prepare (on the development machine, before calling the device tool) -------------------
if [ "$MODE" = prepare ]; then
  mkdir -p "$CARRY/wheels"
  src=$(ARCHIVE="$ARCHIVE" find_archive) || { echo "device_check: no cifar10_jpg.tar.gz found (pass --archive)" >&2; exit 2; }
  [ "$src" -ef "$CARRY/cifar10_jpg.tar.gz" ] || cp "$src" "$CARRY/cifar10_jpg.tar.gz"
  PY=${PYTHON:-python3}; [ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
  # The GPU image has no tensorboardX (a pure-Python wheel; the tests' default runs log to it).
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$CARRY/wheels" tensorboardX==2.6.5 \
    || echo "device_check: could not fetch the tensorboardX wheel; tests that log to TensorBoard will fail there" >&2
  du -sh "$CARRY"
  echo "now: run(command=\"bash experiments/device_check.sh\", carry=[\"$CARRY\"], timeout_s=600)"
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
cat >"$WORK/frameworks.py" <<'EOF'
"""Stage 2: per (kernels_per_layer, framework) one worker process: setup, first step (JAX:
compilation), first scoring batch, one warm-up step, then --repeats blocks of --steps training
steps and --eval_batches scoring batches, synced at the end of each block; medians. JAX: the
worker of experiments/benchmarks/bench_train.py (jit, donated state, the project's optimisers). PyTorch:
sagan_jax.torch_ref.TorchTrainer with G and D moved to the GPU (one host sync per step: the
reference step reads L_D for the re-initialisation rule)."""
import argparse, json, os, resource, statistics, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--fw")
ap.add_argument("--kpl", type=int)
ap.add_argument("--kpls", default="2,1")
ap.add_argument("--ngf", type=int, default=64)
ap.add_argument("--isize", type=int, default=32)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--eval_batches", type=int, default=20)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--frameworks", default="jax,torch")
ap.add_argument("--dsc_impl", default="auto")
ap.add_argument("--out", required=True)
a = ap.parse_args()

if a.fw is None:  # driver: one process per (kpl, framework), alternating which goes first
    for i, kpl in enumerate(int(k) for k in a.kpls.split(",")):
        fws = [f for f in a.frameworks.split(",") if f]
        for fw in (fws if i % 2 == 0 else fws[::-1]):
            argv = [sys.executable, __file__, *sys.argv[1:], "--fw", fw, "--kpl", str(kpl)]
            t0 = time.time()
            p = subprocess.run(argv, capture_output=True, text=True)
            sys.stderr.write(p.stderr[-3000:])
            line = {"fw": fw, "kpl": kpl, "error": f"exit {p.returncode}: "
                    + (p.stderr.strip().splitlines() or ["?"])[-1][:300]}
            for out_line in p.stdout.splitlines():
                if out_line.startswith("{"):
                    line = json.loads(out_line)
            line["process_wall_s"] = round(time.time() - t0, 1)
            print(json.dumps(line), flush=True)
            with open(a.out, "a") as f:
                f.write(json.dumps(line) + "\n")
    sys.exit(0)

from sagan_jax.config import Config

cfg = Config(batch_size=a.batch, eval_batch_size=a.batch, ngf=a.ngf, ndf=a.ngf, isize=a.isize,
             progress=False, kernels_per_layer=a.kpl, dsc_impl=a.dsc_impl)
if a.fw == "jax":
    import jax
    from experiments.benchmarks.bench_train import jax_worker

    info, train, evaluate = jax_worker(cfg)
    info.update(device=str(jax.devices()[0]), dsc_impl=cfg.dsc_impl,
                device_kind=jax.devices()[0].device_kind)

    def peak_device_mb():
        stats = jax.local_devices()[0].memory_stats() or {}
        return round(stats["peak_bytes_in_use"] / 2**20, 1) if "peak_bytes_in_use" in stats else None
else:
    import numpy as np
    import torch
    from sagan_jax.torch_ref import TorchTrainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    trainer = TorchTrainer(cfg)
    trainer.g.to(device)  # in place: the optimisers keep the same parameter objects
    trainer.d.to(device)
    x = torch.from_numpy(np.random.default_rng(0).uniform(
        -1, 1, (a.batch, 3, a.isize, a.isize)).astype(np.float32)).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "setup_s": time.perf_counter() - t0, "device": device,
            "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}

    def train(n):
        for _ in range(n):
            trainer.step(x)
        sync()

    def evaluate(n):
        for _ in range(n):
            trainer.score(x)
        sync()

    def peak_device_mb():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


def timed(fn, n):
    t = time.perf_counter()
    fn(n)
    return time.perf_counter() - t


res = {"fw": a.fw, "kpl": a.kpl, "ngf": a.ngf, "batch": a.batch, "isize": a.isize,
       "setup_s": round(info["setup_s"], 2), "info": info}
res["first_step_s"] = round(timed(train, 1), 2)
res["first_eval_s"] = round(timed(evaluate, 1), 2)
timed(train, 1)  # warm-up
tr, ev = [], []
for _ in range(a.repeats):
    tr.append(timed(train, a.steps) / a.steps)
    ev.append(timed(evaluate, a.eval_batches) / a.eval_batches)
res.update(train_ms_per_step=round(1000 * statistics.median(tr), 2),
           train_img_per_s=round(a.batch / statistics.median(tr), 1),
           eval_img_per_s=round(a.batch / statistics.median(ev), 1),
           peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
           peak_device_mb=peak_device_mb())
print(json.dumps(res), flush=True)
EOF
: >"$OUTDIR/frameworks.jsonl"
if [ "$HAVE_TORCH" = 1 ]; then FWS=jax,torch; else FWS=jax; echo "torch is not installed: stage frameworks runs JAX only"; fi
run_stage frameworks "$PY" "$WORK/frameworks.py" "${FW_ARGS[@]}" --frameworks "$FWS" \
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
"$PY" - "$MODE" "$WORK" "$OUTDIR" "$T0" "$BUDGET" <<'EOF'
import json, os, sys, time

mode, work, out, t0, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
stages = []
for line in open(os.path.join(work, "stages.tsv")):
    name, status, rc, secs, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    stages.append({"stage": name, "status": status, "rc": rc, "seconds": int(secs), "note": note})
rep = {"mode": mode, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0)),
       "total_s": int(time.time()) - t0, "budget_s": budget, "stages": stages}


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


rep["info"] = load(os.path.join(work, "info.json"), {})
# tests: counts from the junit XML
try:
    import xml.etree.ElementTree as ET
    suite = ET.parse(os.path.join(out, "tests.xml")).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    rep["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    rep["tests"]["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                              if c.find("failure") is not None or c.find("error") is not None]
except Exception as e:  # noqa: BLE001
    # no junit XML (the stage timed out): the per-test lines of pytest -v in the log
    import re
    lines = open(os.path.join(out, "device_check.log"), errors="replace").read().splitlines()
    res = [m.groups() for m in (re.match(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", l)
                                for l in lines) if m]
    rep["tests"] = {"error": f"no junit XML ({type(e).__name__}); counted from the log",
                    "passed": sum(r[1] == "PASSED" for r in res),
                    "failed": [r[0] for r in res if r[1] in ("FAILED", "ERROR")]}
fw = []
if os.path.exists(os.path.join(out, "frameworks.jsonl")):
    fw = [json.loads(l) for l in open(os.path.join(out, "frameworks.jsonl")) if l.strip()]
rep["frameworks"] = fw
runs = load(os.path.join(out, "bench_runs.json"))
rep["run_axis"] = runs and {"results": runs.get("results"), "skipped": runs.get("skipped")}
# paper: metrics.json, or the epochs finished before the stage's time ran out
pw = os.path.join(work, "paper")
paper = load(os.path.join(pw, "metrics.json"))
if paper is None and os.path.exists(os.path.join(pw, "metrics.jsonl")):
    epochs = []
    for l in open(os.path.join(pw, "metrics.jsonl")):
        try:
            r = json.loads(l)
        except ValueError:
            continue
        if r.get("kind") == "epoch":
            epochs.append(r)
    paper = {"partial": True, "epochs_finished": len(epochs), "history": epochs}
if paper is not None:
    with open(os.path.join(out, "paper_metrics.json"), "w") as f:
        json.dump(paper, f, indent=1)
    keep = ("auc", "ap", "f1", "threshold", "f1_oracle", "last_epoch", "epochs", "wall_time_s",
            "time_to_first_step_s", "peak_host_memory_mb", "peak_device_memory_mb", "partial",
            "epochs_finished", "data", "devices")
    rep["paper"] = {k: paper[k] for k in keep if k in paper}
    hist = paper.get("history") or []
    rep["paper"]["train_img_per_s_by_epoch"] = [r.get("train_img_per_s") for r in hist]
    rep["paper"]["test_auc_by_epoch"] = [r.get("test_auc") for r in hist]
    rep["paper"]["stage_seconds"] = next((s["seconds"] for s in stages if s["stage"] == "paper"), None)
with open(os.path.join(out, "device_check.json"), "w") as f:
    json.dump(rep, f, indent=1)

L = [f"# device_check ({mode}), {rep['date_utc']} UTC", "",
     f"Total {rep['total_s']} s (budget {budget} s). " + ", ".join(
         f"{k} {v}" for k, v in rep["info"].items() if k in ("jax_backend", "jax_device_kind", "torch_device", "python")),
     "", "| stage | status | exit | seconds | note |", "|---|---|---:|---:|---|"]
L += [f"| {s['stage']} | {s['status']} | {s['rc']} | {s['seconds']} | {s['note']} |" for s in stages]
t = rep["tests"]
L += ["", f"Tests: {t}"]
if fw:
    L += ["", "| framework | kernels_per_layer | device | train ms/step | train img/s | eval img/s | setup s | first step s | first eval s | peak device MB | peak RSS MB |",
          "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in fw:
        if "error" in r:
            L.append(f"| {r['fw']} | {r['kpl']} | failed: {r['error']} | | | | | | | | |")
            continue
        dev = r["info"].get("device_name") or r["info"].get("device")
        L.append(f"| {r['fw']} | {r['kpl']} | {dev} | {r['train_ms_per_step']} | {r['train_img_per_s']} | "
                 f"{r['eval_img_per_s']} | {r['setup_s']} | {r['first_step_s']} | {r['first_eval_s']} | "
                 f"{r['peak_device_mb']} | {r['peak_rss_mb']} |")
md = os.path.join(work, "bench_runs.md")
if os.path.exists(md):
    L += ["", "## Run axis (experiments.benchmarks.bench_runs)", "", open(md).read()]
md = os.path.join(work, "control_flow.md")
if os.path.exists(md):
    L += ["", "## The step inside control flow (experiments.benchmarks.bench_control_flow)", "", open(md).read()]
if "paper" in rep:
    L += ["", "## Paper protocol, one class (bird), CIFAR-10 JPEG copy", "", json.dumps(rep["paper"])]
with open(os.path.join(out, "device_check.md"), "w") as f:
    f.write("\n".join(L) + "\n")
print("\n".join(L))
EOF
echo "device_check: done in $(( $(date +%s) - T0 ))s; results in $OUTDIR/device_check.json and .md"
if awk -F'\t' '$2 == "failed" || $2 == "timed_out" {f = 1} END {exit !f}' "$STAGES"; then exit 1; fi
exit 0
