"""device_check.sh, stage 2: JAX against PyTorch on the device. Per (kernels_per_layer,
framework) one worker process: setup, first step (JAX: compilation), first scoring batch, one
warm-up step, then --repeats blocks of --steps training steps and --eval_batches scoring
batches, synced at the end of each block; medians. JAX: the worker of
experiments/benchmarks/bench_train.py (jit, donated state, the project's optimisers). PyTorch:
sagan_jax.torch_ref.TorchTrainer with G and D moved to the GPU (one host sync per step: the
reference step reads L_D for the re-initialisation rule)."""
import argparse, json, resource, statistics, subprocess, sys, time

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
