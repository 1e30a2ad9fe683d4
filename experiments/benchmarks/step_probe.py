"""One SAGAN training step, probed in the current process: what the benchmarks of XLA:CPU
settings (reproducibility, xla_schedule) measure after their settings took effect. Import it
only once $XLA_FLAGS and the host devices are set (sagan_jax.devices.configure)."""
from __future__ import annotations

import hashlib
import statistics
import time

from experiments import machine


def digest(tree) -> str:
    """The first 12 hex digits of a SHA-256 over every leaf's bytes (bit-for-bit identity)."""
    import jax
    import numpy as np

    h = hashlib.sha256()
    for a in jax.tree.leaves(jax.device_get(tree)):
        h.update(np.asarray(a).tobytes())
    return h.hexdigest()[:12]


def probe_step(ngf: int, kernels_per_layer: int, batch: int, steps: int, n_devices: int) -> dict:
    """Train SAGAN ``steps`` timed steps (after one untimed) on one fixed random 32x32 batch from
    a fixed initialisation, the batch split over ``n_devices`` host devices. Returns the final
    TrainState's digest, the median step time, the compiled step's temporary arena per device
    (MiB), the process's peak RSS (MB) and the device count used."""
    import jax
    import numpy as np

    from sagan_jax.config import Config
    from sagan_jax.devices import put_batch, put_replicated
    from sagan_jax.training.state import init_state, make_optimizers
    from sagan_jax.training.step import make_mesh, make_train_step

    cfg = Config(ngf=ngf, ndf=ngf, batch_size=batch, isize=32,
                 kernels_per_layer=kernels_per_layer)
    mesh = make_mesh(n_devices, cfg.batch_size)
    g_tx, d_tx = make_optimizers(cfg, 100)
    state = put_replicated(init_state(cfg, jax.random.key(0), g_tx, d_tx), mesh)
    step = make_train_step(cfg, g_tx, d_tx, mesh if mesh.devices.size > 1 else None)
    x = put_batch(np.random.default_rng(0).uniform(
        -1, 1, (cfg.batch_size, 32, 32, 3)).astype(np.float32), mesh)
    compiled = step.lower(state, x, jax.random.key(1)).compile()
    times = []
    for i in range(steps + 1):  # the first run is not timed
        t0 = time.perf_counter()
        state, _ = compiled(state, x, jax.random.key(1 + i))
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    return {"state": digest(state), "step_s": statistics.median(times[1:]),
            "arena_mib": compiled.memory_analysis().temp_size_in_bytes / 2 ** 20,
            "rss_mb": machine.peak_rss_mb(),
            "devices": mesh.devices.size}
