"""Where the training step's time goes, per layer, in JAX and in PyTorch.

JAX: a profile (``jax.profiler.trace`` with a Perfetto trace) of ``--steps`` training steps
after a warm-up; every XLA:CPU thunk the trace records (``hlo_op``) is mapped to the layer
that emitted it through the compiled HLO's ``metadata={op_name=...}`` (Flax runs each module
under ``jax.named_scope``: ``.../Generator/down1/...``); the backward pass is the ops whose
op_name holds ``transpose(``. Op time per layer is the sum of its thunks' durations: XLA:CPU
runs independent thunks concurrently, so the sum can exceed the wall time (shares are of the
summed op time).

PyTorch: the same step (sagan_jax.torch_ref.TorchTrainer) with forward and full backward
hooks on every direct child of G and D (the same names: inc, down1..4, cbam1..5, up1..4,
outc; D's convolutions and BatchNorms); a layer's time is the wall time between its hooks,
forward + backward. What the hooks do not cover (losses, optimiser, activations and pooling
outside the children, autograd bookkeeping) is "other".

The two differ in what a layer holds: JAX's down<i> is the DoubleConv only (max-pool outside
the module), PyTorch's holds its max-pool; JAX's up<i> is the DoubleConv, PyTorch's holds the
upsampling, padding and concatenation. The table notes it.

    python -m experiments.benchmarks.profile_step                       # ngf 64, k=2, batch 64; writes docs
    python -m experiments.benchmarks.profile_step --kernels_per_layer 1 --no-write

Writes section ``profile_step`` of docs/benchmarks.md from a quiet machine only (as every
benchmark: experiments/machine.py), and the raw figures to --json.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

from experiments import common, machine

MODULE = "experiments.benchmarks.profile_step"
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?\s([\w\-]+)\(.*?metadata=\{[^}]*?"
                    r"op_name=\"([^\"]*)\"")
_WRAP = re.compile(r"^(?:jvp|transpose|vmap|pjit|jit|checkpoint|remat|cond|while|scan|"
                   r"shard_map|custom_jvp_call|custom_vjp_call)\((.*)\)$")
G_NAMES, D_NAMES = "SAGANGenerator", "DCGANDiscriminator"


def hlo_op_names(hlo_text: str) -> dict:
    """{instruction name: (opcode, op_name)} of every instruction with metadata."""
    out = {}
    for line in hlo_text.splitlines():
        m = _INSTR.match(line)
        if m:
            out[m.group(1)] = (m.group(2), m.group(3))
    return out


def _unwrap(segment: str) -> str:
    while True:
        m = _WRAP.match(segment)
        if not m:
            return segment
        segment = m.group(1)


def layer_of(op_name: str, layers=None):
    """(network, layer, backward?) of an op_name such as
    'jit(step)/transpose(jvp(SAGANGenerator))/down1/dsc1/conv_general_dilated'. ``layers``:
    {'G': names, 'D': names} of the networks' modules (their parameter collections); other
    scopes (jnp.einsum's, jax.nn's) count as ops outside the layers."""
    backward = "transpose(" in op_name
    parts = [_unwrap(p) for p in op_name.split("/")]
    for i, p in enumerate(parts):
        if p in (G_NAMES, D_NAMES):
            net = "G" if p == G_NAMES else "D"
            rest = parts[i + 1:]  # module scopes, then the primitive's name
            layer = rest[0] if len(rest) >= 2 else None
            if layer is None or (layers is not None and layer not in layers[net]):
                layer = "(ops outside the layers)"
            return net, layer, backward
    return "other", "losses, optimiser, glue", backward


# --- JAX ---------------------------------------------------------------------------------------
def jax_profile(cfg, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sagan_jax.methods import dsc_autotune
    from sagan_jax.training.state import init_state, make_optimizers
    from sagan_jax.training.step import make_train_step

    impls = dsc_autotune.resolve_dsc_impls(cfg, cfg.batch_size)
    g_tx, d_tx = make_optimizers(cfg, steps_per_epoch=1000)
    state = init_state(cfg, jax.random.key(cfg.seed), g_tx, d_tx)
    step = make_train_step(cfg, g_tx, d_tx, donate=False)
    x = jnp.asarray(np.random.default_rng(0).uniform(
        -1, 1, (cfg.batch_size, cfg.isize, cfg.isize, 3)).astype(np.float32))
    rng = jax.random.key(1)
    compiled = step.lower(state, x, rng).compile()
    text = compiled.as_text()
    module = re.search(r"HloModule\s+([\w.\-]+)", text).group(1)
    names = hlo_op_names(text)
    modules = {"G": set(state.g_params), "D": set(state.d_params)}
    for _ in range(2):
        state, m = step(state, x, rng)
    jax.block_until_ready((state, m))
    walls = []
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        for _ in range(steps):
            t0 = time.perf_counter()
            state, m = step(state, x, rng)
            jax.block_until_ready((state, m))
            walls.append(time.perf_counter() - t0)
        jax.profiler.stop_trace()
        path = glob.glob(os.path.join(d, "**", "perfetto_trace.json.gz"), recursive=True)[0]
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    per_layer = collections.defaultdict(lambda: {"fwd_ms": 0.0, "bwd_ms": 0.0,
                                                 "ops": collections.Counter()})
    unmatched = 0.0
    for e in events:
        a = e.get("args") or {}
        if e.get("ph") != "X" or a.get("hlo_module") != module or "hlo_op" not in a:
            continue
        ms = e["dur"] / 1000.0 / steps
        op = a["hlo_op"]
        if op not in names:
            unmatched += ms
            continue
        opcode, op_name = names[op]
        net, layer, bwd = layer_of(op_name, modules)
        rec = per_layer[(net, layer)]
        rec["bwd_ms" if bwd else "fwd_ms"] += ms
        rec["ops"][opcode] += ms
    out = {f"{net}/{layer}": {"fwd_ms": r["fwd_ms"], "bwd_ms": r["bwd_ms"],
                              "ops": dict(r["ops"].most_common(3))}
           for (net, layer), r in per_layer.items()}
    return {"layers": out, "unmatched_ms": unmatched, "step_wall_ms": 1000 * statistics.median(walls),
            "module": module, "dsc_impls": [list(p) for p in impls], "jax": jax.__version__}


# --- PyTorch -----------------------------------------------------------------------------------
def torch_profile(cfg, steps: int, threads: int) -> dict:
    import numpy as np
    import torch

    from sagan_jax.torch_ref import TorchTrainer

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    trainer = TorchTrainer(cfg)
    x = torch.from_numpy(np.random.default_rng(0).uniform(
        -1, 1, (cfg.batch_size, 3, cfg.isize, cfg.isize)).astype(np.float32))
    times = collections.defaultdict(lambda: {"fwd_ms": 0.0, "bwd_ms": 0.0})
    starts = collections.defaultdict(list)
    on = {"v": False}

    def hook(name, kind):
        def pre(*_):
            if on["v"]:
                starts[(name, kind)].append(time.perf_counter())

        def post(*_):
            if on["v"] and starts[(name, kind)]:
                times[name][f"{kind}_ms"] += 1000 * (time.perf_counter() - starts[(name, kind)].pop())
        return pre, post

    for net, mod in (("G", trainer.g), ("D", trainer.d)):
        for cname, child in mod.named_children():
            name = f"{net}/{cname}"
            pre, post = hook(name, "fwd")
            child.register_forward_pre_hook(pre)
            child.register_forward_hook(post)
            bpre, bpost = hook(name, "bwd")
            child.register_full_backward_pre_hook(bpre)
            child.register_full_backward_hook(bpost)
    for _ in range(2):
        trainer.step(x)
    walls = []
    on["v"] = True
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.step(x)
        walls.append(time.perf_counter() - t0)
    on["v"] = False
    layers = {k: {"fwd_ms": v["fwd_ms"] / steps, "bwd_ms": v["bwd_ms"] / steps}
              for k, v in times.items()}
    return {"layers": layers, "step_wall_ms": 1000 * statistics.median(walls),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


# --- report ------------------------------------------------------------------------------------
def order_key(name: str):
    net, layer = name.split("/", 1)
    m = re.match(r"([a-z_]+?)(\d*)$", layer)
    base, idx = (m.group(1), int(m.group(2) or 0)) if m else (layer, 0)
    groups = ["inc", "down", "cbam", "up", "outc", "initial_conv", "pyramid_conv", "pyramid_bn",
              "final_conv", "classifier"]
    return ({"G": 0, "D": 1}.get(net, 2), groups.index(base) if base in groups else 99, idx, layer)


def table(args, k: int, jx: dict, th: dict, load) -> str:
    names = sorted(set(jx["layers"]) | set(th["layers"]), key=order_key)
    jtot = sum(v["fwd_ms"] + v["bwd_ms"] for v in jx["layers"].values()) + jx["unmatched_ms"]
    head = [machine.machine_header(load, packages=("jax", "jaxlib", "flax", "torch")), ""] \
        if load is not None else []
    lines = head + [
        f"**kernels_per_layer {k}.** "
        f"SAGAN training step, 32x32, batch {args.batch}, ngf = ndf = {args.ngf}, "
        f"kernels_per_layer {k}, float32; {args.steps} profiled steps "
        f"after 2 warm-up steps. JAX: dsc_impl auto (per-layer: "
        + ", ".join(f"{k} x{n}" for k, n in sorted(collections.Counter(
            i for _, i in jx["dsc_impls"]).items()))
        + f"); step wall {jx['step_wall_ms']:.0f} ms (median, under the profiler), summed op "
        f"time {jtot:.0f} ms. PyTorch ({th['threads']} threads): step wall "
        f"{th['step_wall_ms']:.0f} ms (median, with the hooks).",
        "",
        "| layer | JAX fwd ms | JAX bwd ms | JAX share | XLA:CPU ops (ms) | PyTorch fwd ms | "
        "PyTorch bwd ms | PyTorch share | PyTorch / JAX |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    tt = th["step_wall_ms"]
    covered = 0.0
    for n in names:
        j, t = jx["layers"].get(n), th["layers"].get(n)
        jm = (j["fwd_ms"] + j["bwd_ms"]) if j else None
        tm = (t["fwd_ms"] + t["bwd_ms"]) if t else None
        covered += tm or 0.0
        ops = ", ".join(f"{k} {v:.0f}" for k, v in j["ops"].items()) if j else ""
        lines.append(
            f"| {n} | {j['fwd_ms']:.1f} | {j['bwd_ms']:.1f} | {100 * jm / jtot:.0f}% | {ops} | "
            if j else f"| {n} | – | – | – | | ")
        lines[-1] += (f"{t['fwd_ms']:.1f} | {t['bwd_ms']:.1f} | {100 * tm / tt:.0f}% | "
                      if t else "– | – | – | ")
        lines[-1] += (f"{tm / jm:.2f} |" if (jm and tm) else "– |")
    lines.append(f"| (JAX: thunks without metadata) | {jx['unmatched_ms']:.1f} | | "
                 f"{100 * jx['unmatched_ms'] / jtot:.0f}% | | | | | |")
    lines.append(f"| (PyTorch: outside the hooked layers) | | | | | "
                 f"{max(tt - covered, 0):.1f} | | {100 * max(tt - covered, 0) / tt:.0f}% | |")
    lines += [
        "",
        "JAX ms: summed durations of the XLA:CPU thunks attributed to the layer per step "
        "(independent thunks run concurrently, so the sum exceeds the wall); PyTorch ms: wall "
        "time between each layer's forward and backward hooks per step (D's layers run 4 times "
        "per step: real and fake in G's loss and in D's; a layer whose input needs no gradient "
        "(G/inc; D/initial_conv in D's loss) fires no backward hook, so that backward time is "
        "in 'outside'). JAX's down<i>/up<i> exclude the "
        "max-pool and the upsampling + concatenation (outside the modules, in "
        "'(ops outside the layers)'); PyTorch's include them. Ratio above 1: JAX spends less "
        "on that layer.",
    ]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngf", type=common.positive_int, default=64)
    ap.add_argument("--batch", type=common.positive_int, default=64)
    ap.add_argument("--kernels_per_layer", default="2,1",
                    help="comma-separated; one table each (2: the paper's Table 1, 1: the "
                         "authors' code)")
    ap.add_argument("--steps", type=common.positive_int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="PyTorch threads (0 = its default)")
    machine.add_output_arguments(ap, common.BENCHMARKS_MD)
    machine.add_load_arguments(ap)
    args = ap.parse_args(argv)
    if args.threads < 0:
        ap.error(f"--threads={args.threads}: give 0 (PyTorch's default) or more")

    from sagan_jax.config import Config

    try:
        ks = [int(k) for k in args.kernels_per_layer.split(",") if k]
        if not ks:
            raise ValueError("give at least one value, e.g. 2,1")
        cfgs = [Config(batch_size=args.batch, eval_batch_size=args.batch, ngf=args.ngf,
                       ndf=args.ngf, isize=32, progress=False, kernels_per_layer=k)
                for k in ks]
    except ValueError as e:  # ConfigError too: one line
        common.fail(f"--kernels_per_layer={args.kernels_per_layer!r}: {e}", prog="profile_step")
    import torch

    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    raw = []
    for cfg in cfgs:
        jx = jax_profile(cfg, args.steps)
        th = torch_profile(cfg, args.steps, args.threads or torch.get_num_threads())
        raw.append((cfg.kernels_per_layer, jx, th))
    load = monitor.report()
    text = "\n\n".join(table(args, k, jx, th, load if i == 0 else None)
                       for i, (k, jx, th) in enumerate(raw))
    text += f"\n\nCommand: `{common.command_line(MODULE)}`."
    machine.publish(args, "profile_step", text, load, {"profiles": raw})


if __name__ == "__main__":
    common.run_script(main)
