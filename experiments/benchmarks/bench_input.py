"""Input pipeline throughput against the training step's, on this machine.

    python -m experiments.benchmarks.bench_input [--data_root=~/.cache/sagan_jax/cifar10_jpg] [--steps=5]

Measures, in one process:
  1. decoding: the labelled JPEG folder (the shared CIFAR-10 copy, if --data_root exists) read
     and decoded to uint8 in parallel (sagan_jax.data.image_folder), images/s;
  2. feeding, as the training program does it: the split's uint8 images placed on the device
     once (sagan_jax.training.program.device_images), then per epoch the seeded order
     (sagan_jax.data.pipeline.epoch_order) and each batch gathered by index on the device and
     converted to [-1, 1] floats (45,000 32x32 images, batch 64), images/s, first epoch (with
     the upload and compilation) and later epochs;
  3. the training step: sagan_jax.training.step.make_train_step at 32x32, batch 64, the
     default model, timed over --steps steps after two warm-up (compile) steps, images/s.
Records the machine's load (load average before and after, other processes' CPU share during
the run) and writes a table to the bench_input section of docs/benchmarks.md (--write='' to
skip) only from a quiet machine; a loaded machine's figures only with --allow_loaded, and then
to the labelled section bench_input_loaded.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from experiments import common, machine

MODULE = "experiments.benchmarks.bench_input"


def bench_decode(data_root: str):
    from sagan_jax.data.image_folder import load_image_folder

    t = time.perf_counter()
    data = load_image_folder(data_root, "bird", "ganomaly", 32)
    dt = time.perf_counter() - t
    n = len(data.train) + len(data.test)
    return data.train.images, n / dt, n, dt


def bench_feed(images, batch: int, epochs: int):
    import jax
    import jax.numpy as jnp

    from sagan_jax.data.pipeline import epoch_order, to_float_np
    from sagan_jax.training.program import device_images

    gather = jax.jit(lambda im, idx: to_float_np(jnp.take(im, idx, axis=0)))
    rates, on_device = [], None
    for epoch in range(epochs):
        t = time.perf_counter()
        if on_device is None:  # the first epoch pays the upload, as a run's first chunk does
            on_device = device_images(images, batch)
        n, last = 0, None
        for idx in epoch_order(len(images), batch, 0, epoch):
            last = gather(on_device, idx)
            n += len(idx)
        jax.block_until_ready(last)
        rates.append(n / (time.perf_counter() - t))
    return rates


def bench_step(batch: int, steps: int):
    import jax
    import numpy as np

    from sagan_jax.config import Config
    from sagan_jax.training.state import init_state, make_optimizers
    from sagan_jax.training.step import make_train_step

    cfg = Config(isize=32, batch_size=batch)
    g_tx, d_tx = make_optimizers(cfg, 100)
    state = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    step = make_train_step(cfg, g_tx, d_tx, None)
    x = jax.device_put(np.random.default_rng(0).uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32))
    t = time.perf_counter()
    for i in range(2):
        state, m = step(state, x, jax.random.key(i))
    jax.block_until_ready(m)
    warm = time.perf_counter() - t
    times = []
    for i in range(steps):
        t = time.perf_counter()
        state, m = step(state, x, jax.random.key(10 + i))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times), warm, cfg


def table(r: dict) -> str:
    rows = [
        "| stage | images/s | notes |",
        "|---|---:|---|",
    ]
    if r.get("decode") is not None:
        rate, n, dt = r["decode"]
        rows.append(f"| decode JPEG folder -> uint8 (Pillow, a thread pool) | {rate:,.0f} | "
                    f"{n:,} images of the shared CIFAR-10 JPEG copy in {dt:.1f} s, once per run |")
    else:
        rows.append("| decode JPEG folder | not measured | --data_root missing |")
    feed = r["feed"]
    later = statistics.median(feed[1:]) if len(feed) > 1 else feed[0]
    rows.append(f"| feed: order + gather on the device, first epoch | {feed[0]:,.0f} | "
                f"{r['n_feed']:,} images, batch {r['batch']}; includes the one-time upload |")
    rows.append(f"| feed: order + gather on the device, later epochs (median of "
                f"{len(feed) - 1}) | "
                f"{later:,.0f} | the steady state the training loop sees |")
    rows.append(f"| training step (default model, ngf={r['ngf']}, 32x32, batch {r['batch']}, one "
                "device) | "
                f"{r['step']:,.1f} | median of {r['steps']} steps after 2 warm-up steps "
                f"({r['warm']:.0f} s, compile included) |")
    ratio = later / r["step"]
    return "\n".join([
        r["header"],
        "",
        f"Command: `{r['command']}`.",
        "",
        *rows,
        "",
        f"**Feed / step = {ratio:,.0f}x** (target: at least 10x). The training loop never waits on "
        "the input: each batch is gathered by index from the decoded uint8 images, which are on "
        "the device once per run.",
        "",
        "Not measured: "
        + ("accelerators (this machine has none), " if r["backend"] == "cpu" else "")
        + "more than one device, the anomaly_folder tfds read path, ngf=32, the PyTorch "
        "DataLoader.",
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_root", default="~/.cache/sagan_jax/cifar10_jpg")
    ap.add_argument("--batch", type=common.positive_int, default=64)
    ap.add_argument("--epochs", type=common.positive_int, default=4, help="feeding epochs (first + later ones)")
    ap.add_argument("--steps", type=common.positive_int, default=5, help="timed training steps")
    ap.add_argument("--write", default=common.BENCHMARKS_MD,
                    help="the Markdown file to write ('' = print only)")
    machine.add_load_arguments(ap)
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error(f"--epochs={args.epochs}: give at least 2 (the first epoch and the later ones "
                 "are reported apart)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import jax
    import numpy as np

    root = os.path.expanduser(args.data_root)
    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    r = {"batch": args.batch, "steps": args.steps, "backend": jax.default_backend(),
         "command": common.command_line(MODULE)}
    if os.path.isdir(root):
        images, rate, n, dt = bench_decode(root)
        r["decode"] = (rate, n, dt)
    else:
        images = np.random.default_rng(0).integers(0, 256, (45_000, 32, 32, 3), dtype=np.uint8)
        r["decode"] = None
    print(f"decode: {r['decode']}", flush=True)
    r["n_feed"] = len(images)
    r["feed"] = bench_feed(images, args.batch, args.epochs)
    print(f"feed: {r['feed']}", flush=True)
    r["step"], r["warm"], cfg = bench_step(args.batch, args.steps)
    r["ngf"] = cfg.ngf
    print(f"step: {r['step']:.1f} img/s (warm-up {r['warm']:.1f} s)", flush=True)
    load = monitor.report()
    r["header"] = machine.machine_header(
        load, packages=("jax", "jaxlib", "flax", "tensorflow", "tensorflow-datasets"))
    text = table(r)
    print(text)
    if args.write and not machine.write_benchmark_section(args.write, "bench_input", text, load,
                                                         args.allow_loaded):
        sys.exit(3)


if __name__ == "__main__":
    common.run_script(main)
