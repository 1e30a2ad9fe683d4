"""How far ``--compute_dtype=bfloat16`` moves SAGAN from float32.

From one float32 initial state (both dtypes create the same float32 parameters), on a batch of
the embedded digits (32x32 RGB in [-1, 1]), it compares the bfloat16 network with the float32
one:

  - generator output G(x), evaluation mode (running statistics) and training mode (batch
    statistics), and the discriminator's logits and features on x;
  - one training step (sagan_jax.training.step.train_step, Adam): its losses, gradient norms,
    and the parameter update theta' - theta of G and of D (relative error and cosine);
  - that parameters, optimiser state and BatchNorm statistics stay float32 in bfloat16.

Errors are relative: ||a16 - a32|| / ||a32|| (RMS over all elements). For scale, the same
figures are given for float32 run from the parameters rounded to bfloat16: at initialisation
this network is so sensitive (training-mode BatchNorm over ~18 layers) that this alone moves
the early layers' gradients by 20-50%. It prints a table and writes no docs. The AUC comparison (quickstart over seeds in both dtypes) is a separate,
longer run.

    python -m experiments.benchmarks.bf16_check [--ngf 64] [--batch 32] [--kernels_per_layer 2]
"""
from __future__ import annotations

import argparse
import json
import time

from experiments import common, machine, sections


def rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def tree_rel(a, b) -> float:
    import jax
    import numpy as np

    da = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(a)])
    db = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(b)])
    return rel(da, db)


def tree_cos(a, b) -> float:
    import jax
    import numpy as np

    da = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(a)])
    db = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(b)])
    return float(da @ db / max(np.linalg.norm(da) * np.linalg.norm(db), 1e-30))


DIGITS = 1797  # images in scikit-learn's digits: one batch of at most these


def digits_batch(n: int, isize: int):
    import numpy as np
    from sklearn.datasets import load_digits

    from sagan_jax.data.digits import digits_to_rgb

    images = digits_to_rgb(load_digits().images[:n], isize)
    return (images.astype(np.float32) / 127.5 - 1.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ngf", type=common.positive_int, default=64, help="generator and discriminator width")
    ap.add_argument("--batch", type=common.positive_int, default=32)
    ap.add_argument("--isize", type=int, default=32)
    ap.add_argument("--kernels_per_layer", type=common.positive_int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="also write the figures to this JSON file")
    ap.add_argument("--docs", action="store_true",
                    help="also write the table to docs/results.md (section bf16_check)")
    args = ap.parse_args(argv)
    if args.batch > DIGITS:
        ap.error(f"--batch={args.batch}: the embedded digits hold {DIGITS} images; give at most "
                 f"{DIGITS}")

    import jax
    import jax.numpy as jnp

    from sagan_jax.config import Config
    from sagan_jax.methods import build_models
    from sagan_jax.training.state import init_state, make_optimizers
    from sagan_jax.methods.sagan import train_step

    monitor = machine.LoadMonitor()
    base = dict(ngf=args.ngf, ndf=args.ngf, isize=args.isize, batch_size=args.batch,
                kernels_per_layer=args.kernels_per_layer, seed=args.seed)
    cfgs = {d: Config(**base, compute_dtype=d) for d in ("float32", "bfloat16")}
    # Reference for the network's own sensitivity: float32 from the parameters rounded to bf16.
    cfgs["float32, parameters rounded to bf16"] = cfgs["float32"]
    x = jnp.asarray(digits_batch(args.batch, args.isize))
    key = jax.random.key(args.seed)
    rows, out, t0 = [], {}, time.perf_counter()
    for dtype, cfg in cfgs.items():
        g_tx, d_tx = make_optimizers(cfg, 100)
        state = init_state(cfg, key, g_tx, d_tx)
        if "rounded" in dtype:
            bf = lambda t: jax.tree.map(lambda a: a.astype(jnp.bfloat16).astype(a.dtype), t)
            state = state.replace(g_params=bf(state.g_params), d_params=bf(state.d_params))
        g, d = build_models(cfg)
        gv = {"params": state.g_params, "batch_stats": state.g_stats}
        dv = {"params": state.d_params, "batch_stats": state.d_stats}
        fwd = jax.jit(lambda gv, dv, x: (
            g.apply(gv, x, train=False),
            g.apply(gv, x, train=True, update_stats=False),
            d.apply(dv, x, train=True, update_stats=False)))
        y_eval, y_train, (logit, feat) = fwd(gv, dv, x)
        step = jax.jit(lambda s, x, r: train_step(s, x, r, cfg=cfg, g_tx=g_tx, d_tx=d_tx))
        new, metrics = step(state, x, jax.random.key(1))
        float_dtypes = sorted({str(a.dtype) for name in ("g_params", "g_stats", "d_params",
                                                          "d_stats", "g_opt_state", "d_opt_state")
                               for a in jax.tree.leaves(getattr(new, name))
                               if jnp.issubdtype(a.dtype, jnp.floating)})
        out[dtype] = dict(state=state, new=new, metrics=jax.device_get(metrics), y_eval=y_eval,
                          y_train=y_train, logit=logit, feat=feat, float_dtypes=float_dtypes)
    b = out["float32"]
    upd = lambda o, name: jax.tree.map(lambda n, s: n - s, getattr(o["new"], name),
                                       getattr(o["state"], name))
    rows.append(("initial parameters equal (bf16 / float32)",
                 str(tree_rel(out["bfloat16"]["state"].g_params, b["state"].g_params) == 0.0)))
    header = list(out)[1:]
    for label, a in ((h, out[h]) for h in header):
        p = f"[{label}] "
        rows.append((p + "G(x), evaluation mode: rel. error", f"{rel(a['y_eval'], b['y_eval']):.2e}"))
        rows.append((p + "G(x), training mode: rel. error", f"{rel(a['y_train'], b['y_train']):.2e}"))
        rows.append((p + "D logits: rel. error", f"{rel(a['logit'], b['logit']):.2e}"))
        rows.append((p + "D features: rel. error", f"{rel(a['feat'], b['feat']):.2e}"))
        for k in ("l_g", "l_adv", "l_con", "l_lat", "l_d", "g_grad_norm", "d_grad_norm"):
            v16, v32 = float(a["metrics"][k]), float(b["metrics"][k])
            rows.append((p + f"step {k}: float32 -> this (rel. diff)",
                         f"{v32:.5g} -> {v16:.5g} ({abs(v16 - v32) / max(abs(v32), 1e-30):.2e})"))
        for name in ("g_params", "d_params"):
            rows.append((p + f"update of {name}: rel. error, cosine",
                         f"{tree_rel(upd(a, name), upd(b, name)):.2e}, "
                         f"{tree_cos(upd(a, name), upd(b, name)):.4f}"))
    a = out["bfloat16"]
    rows.append(("bf16 run: dtypes of params, opt state, BN stats", ", ".join(a["float_dtypes"])))
    load = monitor.report()
    body = "\n".join([
        f"bfloat16 against float32, SAGAN ngf = ndf = {args.ngf}, {args.isize}x{args.isize}, "
        f"batch {args.batch} of the embedded digits, kernels_per_layer {args.kernels_per_layer}, "
        f"seed {args.seed}; one step from the same float32 initial state "
        f"({time.perf_counter() - t0:.0f} s).", "",
        "| quantity | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows], "",
        machine.machine_header(load), "",
        "Command: `" + common.command_line("experiments.benchmarks.bf16_check", argv) + "`"])
    print(body)
    if args.docs:
        sections.replace_section(common.RESULTS_MD, "bf16_check", body,
                               heading="## Mixed precision: bfloat16 against float32, one step")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), rows=rows), f, indent=1)


if __name__ == "__main__":
    common.run_script(main)
