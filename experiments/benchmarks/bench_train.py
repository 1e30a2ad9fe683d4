"""JAX vs PyTorch, side by side in one run: SAGAN training and evaluation throughput, time to
the first step, peak memory.

Each framework runs in its own worker process (so their memory is measured apart and neither
framework's thread pools or allocator disturb the other); the parent alternates between
them -- one timed block of JAX, then one of PyTorch, then the other order -- so that a
shared, noisy machine slows both alike, and reports medians. Both train the same model at
the same size on the same random batch (32x32, batch 64, ngf = ndf = 64):

  - JAX: sagan_jax.training.step.make_train_step (jit, donated state) with the project's
    Adam optimisers; evaluation with the model's scoring function (its ModelSpec's
    ``components``, what sagan_jax.training.evaluate runs per batch), jitted.
  - PyTorch: sagan_jax.torch_ref (eager, torch's default threads), TorchTrainer.step and
    TorchTrainer.score; same step order and BatchNorm rules.

Measured:
  - train img/s: batch / median seconds per step (each block: `--steps` steps, synced at
    the end of the block);
  - eval img/s: batch / median seconds per scoring batch (G + D on x and on G(x), running
    averages);
  - first step: seconds of the first training step (JAX: trace + XLA compilation + run;
    PyTorch: eager warm-up), and the first scoring batch likewise; setup: build + init;
  - peak memory: the worker's peak resident set size (getrusage ru_maxrss), which includes
    the framework, the compiled programs and all buffers.

The machine's load is recorded (load average before and after, other processes' CPU share
during the run; experiments/machine.py). Figures go to docs/benchmarks.md only from a quiet
machine (section bench_train); a loaded machine's only with --allow_loaded, and then to the
labelled second table (section bench_train_loaded).

    python -m experiments.benchmarks.bench_train                     # DSC and plain, writes docs
    python -m experiments.benchmarks.bench_train --configs dsc --repeats 2 --no-write
    python -m experiments.benchmarks.bench_train --jax_dsc_impls shift,auto   # compare DSC impls too
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from experiments import common, machine

MODULE = "experiments.benchmarks.bench_train"


# --- workers --------------------------------------------------------------------------------
def jax_worker(cfg):
    import jax
    import numpy as np

    from sagan_jax import methods
    from sagan_jax.devices import put_batch, put_replicated
    from sagan_jax.methods.spec import variables_of
    from sagan_jax.training.state import init_state, make_optimizers
    from sagan_jax.training.step import make_mesh, make_train_step
    from sagan_jax.methods import dsc_autotune

    # What the training entry point does (sagan_jax.training.loop): the batch split over the
    # host devices (one per core by default), the per-layer DSC forms of those settings (the
    # fixed table unless --dsc_autotune; timing, if any, reported apart, not in setup).
    mesh = make_mesh(0, cfg.batch_size)
    n_dev = mesh.devices.size
    t0 = time.perf_counter()
    impls = dsc_autotune.resolve_dsc_impls(cfg, cfg.batch_size // n_dev)
    autotune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    g_tx, d_tx = make_optimizers(cfg, steps_per_epoch=1000)
    state = put_replicated(init_state(cfg, jax.random.key(cfg.seed), g_tx, d_tx), mesh)
    jax.block_until_ready(state)
    setup = time.perf_counter() - t0
    step = make_train_step(cfg, g_tx, d_tx, mesh if n_dev > 1 else None)
    x = put_batch(np.random.default_rng(0).uniform(
        -1, 1, (cfg.batch_size, cfg.isize, cfg.isize, 3)).astype(np.float32), mesh)
    rng = jax.random.key(1)
    holder = {"state": state}
    score = jax.jit(lambda v, x: methods.get(cfg.model).components(cfg, v, x, cfg.eval_batch_stats))

    def train(n):
        s = holder["state"]
        for _ in range(n):
            s, metrics = step(s, x, rng)
        jax.block_until_ready((s, metrics))
        holder["state"] = s

    def evaluate(n):
        v = variables_of(holder["state"])
        for _ in range(n):
            out = score(v, x)
        jax.block_until_ready(out)

    info = {"jax": jax.__version__, "backend": jax.default_backend(), "setup_s": setup,
            "devices": n_dev, "dsc_autotune": cfg.dsc_autotune, "autotune_s": autotune_s,
            "dsc_impls": [list(p) for p in impls]}
    return info, train, evaluate


def torch_worker(cfg):
    import numpy as np
    import torch

    from sagan_jax.torch_ref import TorchTrainer

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    trainer = TorchTrainer(cfg)
    setup = time.perf_counter() - t0
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (cfg.batch_size, 3, cfg.isize, cfg.isize)).astype(np.float32))

    def train(n):
        for _ in range(n):
            trainer.step(x)  # .item() on the losses: one host sync per step, as a loop has

    def evaluate(n):
        for _ in range(n):
            trainer.score(x)

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "setup_s": setup}
    return info, train, evaluate


def worker_main(args):
    from sagan_jax.config import Config

    cfg = Config(**json.loads(args.worker_cfg))
    info, train, evaluate = (jax_worker if args.worker == "jax" else torch_worker)(cfg)
    out = sys.stdout
    sys.stdout = sys.stderr  # keep stray prints off the protocol channel
    out.write(json.dumps(info) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd, n = line.split()
        fn = train if cmd == "train" else evaluate
        t0 = time.perf_counter()
        fn(int(n))
        dt = time.perf_counter() - t0
        out.write(json.dumps({"seconds": dt, "peak_mb": machine.peak_rss_mb()}) + "\n")
        out.flush()


class Worker:
    def __init__(self, kind, cfg_dict, label):
        self.kind, self.label = kind, label
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.p = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--worker", kind, "--worker_cfg", json.dumps(cfg_dict)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=common.ROOT)
        self.info = self._read()

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} worker died (rc {self.p.wait()})")
        return json.loads(line)

    def run(self, cmd, n):
        self.p.stdin.write(f"{cmd} {n}\n")
        self.p.stdin.flush()
        return self._read()

    def close(self):
        self.p.stdin.close()
        self.p.wait()


# --- driver ---------------------------------------------------------------------------------
def bench_config(name, cfg_dict, jax_impls, args):
    workers = [Worker("torch", cfg_dict, "PyTorch")]
    for impl in jax_impls:
        d = dict(cfg_dict, dsc_impl=impl) if cfg_dict["use_dsc"] else cfg_dict
        workers.append(Worker("jax", d, f"JAX ({impl})" if cfg_dict["use_dsc"] else "JAX"))
        if not cfg_dict["use_dsc"]:
            break
    res = {w.label: {"train": [], "eval": []} for w in workers}
    for w in workers:  # first step / first scoring batch (compilation for JAX)
        res[w.label]["first_step_s"] = w.run("train", 1)["seconds"]
        res[w.label]["first_eval_s"] = w.run("eval", 1)["seconds"]
        res[w.label]["setup_s"] = w.info["setup_s"]
    for w in workers:  # warm-up
        w.run("train", 1)
    for r in range(args.repeats):
        order = workers if r % 2 == 0 else workers[::-1]
        for w in order:
            res[w.label]["train"].append(w.run("train", args.steps)["seconds"] / args.steps)
        for w in order:
            res[w.label]["eval"].append(w.run("eval", args.eval_batches)["seconds"] / args.eval_batches)
        print(f"  [{name}] repeat {r + 1}/{args.repeats}: " + ", ".join(
            f"{w.label} {res[w.label]['train'][-1]:.2f} s/step" for w in workers), flush=True)
    for w in workers:
        res[w.label]["peak_mb"] = w.run("eval", 1)["peak_mb"]
        res[w.label]["info"] = w.info
        w.close()
    bs = cfg_dict["batch_size"]
    for lab, v in res.items():
        v["train_ips"] = bs / statistics.median(v["train"])
        v["eval_ips"] = bs / statistics.median(v["eval"])
    return res


def table(results, args, load) -> str:
    threads = {r["PyTorch"]["info"]["threads"] for r in results.values()}
    lines = [
        machine.machine_header(load, packages=("jax", "jaxlib", "flax", "optax", "torch", "numpy"))
        + f" PyTorch threads: {', '.join(map(str, sorted(threads)))}.",
        "",
        f"SAGAN, 32x32, batch {args.batch}, ngf = ndf = "
        f"{args.sizes or args.ngf} (NGF:kernels_per_layer where several), Adam; medians of "
        f"{args.repeats} alternating blocks ({args.steps} training steps / {args.eval_batches} "
        "scoring batches each) after one warm-up step. Ratio = JAX / PyTorch.",
        "",
        "| model | framework | train img/s | ratio | eval img/s | ratio | setup s | first step s | first eval s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        ref = res["PyTorch"]
        for lab, v in res.items():
            rt = v["train_ips"] / ref["train_ips"]
            re_ = v["eval_ips"] / ref["eval_ips"]
            lines.append(
                f"| {name} | {lab} | {v['train_ips']:.1f} | {rt:.2f} | {v['eval_ips']:.1f} | "
                f"{re_:.2f} | {v['setup_s']:.1f} | {v['first_step_s']:.1f} | "
                f"{v['first_eval_s']:.1f} | {v['peak_mb']:.0f} |")
    for name, res in results.items():
        for lab, v in res.items():
            if v["info"].get("dsc_impls"):
                counts = {}
                for _, impl in v["info"]["dsc_impls"]:
                    counts[impl] = counts.get(impl, 0) + 1
                how = (f"timed on this machine in {v['info']['autotune_s']:.1f} s, not in setup"
                       if v["info"].get("dsc_autotune") else "the fixed table, no timing")
                lines.append(
                    f"\n{name}, {lab}: batch split over {v['info'].get('devices', 1)} XLA "
                    "device(s); per-layer DSC forms "
                    + ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))
                    + f" ({how}).")
    lines += [
        "",
        "setup: model build + initialisation (JAX: includes compiling the initialiser). "
        "first step / first eval: the first call (JAX: tracing + XLA compilation + one run). "
        "Peak RSS: getrusage(RUSAGE_SELF).ru_maxrss of each framework's worker process.",
        "",
        f"Command: `{common.command_line(MODULE)}`.",
    ]
    return "\n".join(lines)


def parse_sizes(text: str):
    """'64:2,64:1,32:2' -> [(64, 2), (64, 1), (32, 2)]; a bad pair is a one-line error."""
    out = []
    for item in text.split(","):
        try:
            ngf, k = (int(v) for v in item.split(":"))
            if ngf < 1 or k < 1:
                raise ValueError
        except ValueError:
            common.fail(f"bad --sizes entry {item!r}: write NGF:KERNELS_PER_LAYER pairs of "
                        "positive integers, e.g. --sizes 64:2,64:1,32:2", prog="bench_train")
        out.append((ngf, k))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="dsc,plain", help="dsc and/or plain (SAGAN without DSCs)")
    ap.add_argument("--jax_dsc_impls", default="", help="DSC impls to run for JAX (default: the config's)")
    ap.add_argument("--batch", type=common.positive_int, default=64)
    ap.add_argument("--ngf", type=common.positive_int, default=64)
    ap.add_argument("--kernels_per_layer", type=common.positive_int, default=2, help="DSC multiplier (authors' code: 1)")
    ap.add_argument("--sizes", default="",
                    help="comma-separated NGF:KERNELS_PER_LAYER pairs measured in one invocation "
                         "(one table), e.g. 64:2,64:1,32:2; overrides --ngf/--kernels_per_layer")
    ap.add_argument("--repeats", type=common.positive_int, default=3)
    ap.add_argument("--steps", type=common.positive_int, default=2)
    ap.add_argument("--eval_batches", type=common.positive_int, default=2)
    machine.add_output_arguments(ap, common.BENCHMARKS_MD)
    machine.add_load_arguments(ap)
    ap.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("--worker_cfg", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args)

    from sagan_jax.config import DSC_IMPLS, Config

    # every flag checked, every measured config built (and validated) before any wait
    sizes = parse_sizes(args.sizes) if args.sizes else [(args.ngf, args.kernels_per_layer)]
    configs = [c for c in args.configs.split(",") if c]
    if not configs or any(c not in ("dsc", "plain") for c in configs):
        ap.error(f"--configs={args.configs}: choose dsc and/or plain, e.g. --configs dsc,plain")
    impls = [i for i in args.jax_dsc_impls.split(",") if i] or [Config().dsc_impl]
    if any(i not in DSC_IMPLS for i in impls) or len(set(impls)) < len(impls):
        ap.error(f"--jax_dsc_impls={args.jax_dsc_impls}: choose from {', '.join(DSC_IMPLS)}, "
                 "each once")
    plan = {}
    for ngf, k in sizes:
        base = Config(batch_size=args.batch, eval_batch_size=args.batch, ngf=ngf, ndf=ngf,
                      isize=32, progress=False, kernels_per_layer=k)
        for c in configs:
            use_dsc = c == "dsc"
            name = f"SAGAN (DSC, m={k})" if use_dsc else "SAGAN without DSCs"
            if len(sizes) > 1 or ngf != 64:
                name += f", ngf {ngf}"
            # without DSCs kernels_per_layer changes nothing: the first such config only
            plan.setdefault(name, base.replace(use_dsc=use_dsc))
    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    results = {}
    t0 = time.time()
    for name, cfg in plan.items():
        print(f"{name}: starting workers", flush=True)
        results[name] = bench_config(name, cfg.to_dict(), impls, args)
    load = monitor.report()  # after the workers exited: their CPU time is this run's
    text = table(results, args, load)
    print(f"(total {time.time() - t0:.0f} s)")
    machine.publish(args, "bench_train", text, load, {"results": results})


if __name__ == "__main__":
    common.run_script(main)
