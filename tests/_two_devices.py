"""Run by test_training.py in a subprocess with 2 simulated CPU devices: the shard_map step on
2 devices must equal the single-device step on the same global batch."""
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from sagan_jax.config import Config  # noqa: E402
from sagan_jax.training.state import init_state  # noqa: E402
from sagan_jax.training.step import make_mesh, make_train_step  # noqa: E402


def run(opt):
    cfg = Config(ngf=16, ndf=16, nz=8, isize=16, batch_size=8)
    x = jax.random.uniform(jax.random.key(1), (8, 16, 16, 3), minval=-1, maxval=1)
    rng = jax.random.key(2)
    one = make_train_step(cfg, opt, opt, None, donate=False)
    two = make_train_step(cfg, opt, opt, make_mesh(2), donate=False)
    s1, m1 = one(init_state(cfg, jax.random.key(0), opt, opt), x, rng)
    s2, m2 = two(init_state(cfg, jax.random.key(0), opt, opt), x, rng)
    diff = lambda a, b: max(float(jnp.max(jnp.abs(u - v))) for u, v in
                            zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return {
        "params": diff((s1.g_params, s1.d_params), (s2.g_params, s2.d_params)),
        "stats": diff((s1.g_stats, s1.d_stats), (s2.g_stats, s2.d_stats)),
        "metrics": max(abs(float(m1[k]) - float(m2[k])) / max(1.0, abs(float(m1[k])))
                       for k in m1),
        "sharded": len(jax.devices()),
    }


if __name__ == "__main__":
    import json

    print(json.dumps({"sgd": run(optax.sgd(0.1)), "adam": run(optax.adam(2e-3, b1=0.5))}))
