"""Parameter counts of G and D, and where the paper's Table 1 figures came from."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sagan_jax import methods
from sagan_jax.methods import build_models

def count_params(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def param_counts(cfg) -> dict:
    g, d = build_models(cfg)
    x = jnp.zeros((1, cfg.isize, cfg.isize, 3), jnp.float32)
    g_vars = jax.eval_shape(lambda: g.init(jax.random.key(0), x, train=False))
    d_vars = jax.eval_shape(lambda: d.init(jax.random.key(0), x, train=False))
    return {
        "G": count_params(g_vars["params"]),
        "D": count_params(d_vars["params"]),
        "G_batch_stats": count_params(g_vars["batch_stats"]),
        "D_batch_stats": count_params(d_vars["batch_stats"]),
    }


def summary_text(cfg) -> str:
    """Parameter counts of ``cfg.model`` (as PyTorch's sum of p.numel()) and whatever its spec
    adds (SAGAN: how the paper's Table 1 figures arose)."""
    spec = methods.get(cfg.model)
    c = param_counts(cfg)
    title = (f"{spec.title or cfg.model} at isize {cfg.isize}, ngf {cfg.ngf}, ndf {cfg.ndf}, "
             f"nz {cfg.nz}")
    if spec.variant is not None:
        title += f" ({spec.variant(cfg)})"
    lines = [
        title,
        f"  generator G      {c['G']:>12,} parameters (+{c['G_batch_stats']:,} BatchNorm statistics)",
        f"  discriminator D  {c['D']:>12,} parameters (+{c['D_batch_stats']:,} BatchNorm statistics)",
        f"  G + D            {c['G'] + c['D']:>12,}",
        "Counted as PyTorch's sum of p.numel() (BatchNorm running statistics excluded).",
        f"Anomaly score: {spec.score_formula}",
    ]
    if spec.describe is not None:
        lines += [""] + list(spec.describe(cfg, c))
    return "\n".join(lines)
