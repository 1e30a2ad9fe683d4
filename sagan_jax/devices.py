"""One XLA device per CPU core, and the data-parallel layout that every jitted program uses.

XLA:CPU runs one device's program on a thread pool, but its convolutions leave most of a
second core idle; splitting the batch over one host device per core keeps every core busy
(docs/benchmarks.md has the measurements). ``--host_devices`` picks the number of host
devices; it must be applied before JAX creates its CPU client, which the entry points do
first thing (:func:`configure`). GPUs and TPUs are not affected.
"""
from __future__ import annotations

import logging
import os
import sys

import numpy as np

from sagan_jax.config import parse_host_devices

DATA_AXIS = "batch"
log = logging.getLogger("sagan_jax")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def host_device_count(host_devices: str, *batch_sizes: int) -> int:
    """How many host devices ``--host_devices`` asks for. 'auto': the usable cores, lowered to
    the largest count that divides every batch size given (a batch is never resized)."""
    n = parse_host_devices(host_devices)
    if n:
        return n
    n = usable_cores()
    while n > 1 and any(b % n for b in batch_sizes):
        n -= 1
    return n


def devices_for_batch(n_devices: int, batch_size: int) -> int:
    """The most of ``n_devices`` that split ``batch_size`` evenly (1 at worst)."""
    n = n_devices
    while n > 1 and batch_size % n:
        n -= 1
    return n


# XLA:CPU runs each host device's part of a step on its own threads and meets the others at
# every cross-device sum; by default it kills the whole process when one device waits there
# for 40 s. On a loaded machine (a niced run beside other work) a device can be starved that
# long, and a day of training died that way. A starved device is slow, not stuck: wait.
COLLECTIVE_FLAGS = {"xla_cpu_collective_call_terminate_timeout_seconds": 24 * 3600,
                    "xla_cpu_collective_call_warn_stuck_timeout_seconds": 600}


# XLA:CPU orders a program's operations for concurrency by default, which keeps more
# activations alive at once: the SAGAN training step then needs a larger temporary arena and
# runs slower. The memory-minded order computes the same bits (docs/benchmarks.md, section 8).
SCHEDULER_FLAGS = {"xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def add_xla_flags(values: dict) -> None:
    """Append ``--k=v`` to $XLA_FLAGS for each flag the user did not set there, with a value
    (``--k=...``) or bare (``--k``, which XLA reads as true for a boolean)."""
    flags = os.environ.get("XLA_FLAGS", "")
    given = {t.split("=", 1)[0] for t in flags.split()}
    extra = [f"--{k}={v}" for k, v in values.items() if f"--{k}" not in given]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags] + extra).strip()


def patient_collectives() -> None:
    """Add :data:`COLLECTIVE_FLAGS` to $XLA_FLAGS (before JAX's CPU client exists); a value the
    user set there is kept."""
    add_xla_flags(COLLECTIVE_FLAGS)


def lean_schedule() -> None:
    """Add :data:`SCHEDULER_FLAGS` to $XLA_FLAGS (before JAX's CPU client exists); a value the
    user set there is kept."""
    add_xla_flags(SCHEDULER_FLAGS)


def configure(host_devices: str, *batch_sizes: int) -> int:
    """Ask JAX for that many CPU devices; returns the count asked for. Called before anything
    touches a JAX backend: before JAX is imported it only sets $JAX_NUM_CPU_DEVICES (so a
    process that never uses JAX does not load it, and worker processes inherit the count).
    When a backend already exists (a program that used JAX before calling us), its devices
    stay and a debug line says so. Every count gets :func:`lean_schedule`, several devices also
    :func:`patient_collectives`."""
    n = host_device_count(host_devices, *batch_sizes)
    lean_schedule()
    if n > 1:
        patient_collectives()
    if "jax" not in sys.modules:
        os.environ["JAX_NUM_CPU_DEVICES"] = str(n)
        return n
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        log.debug("JAX's backends already exist; --host_devices=%s not applied", host_devices)
        return len(jax.local_devices())
    jax.config.update("jax_num_cpu_devices", n)
    return n


def local_mesh():
    """A one-axis mesh over this process's devices (scoring and recalibration run per
    process; training uses a global mesh, sagan_jax.training.step.make_mesh)."""
    import jax

    return jax.sharding.Mesh(np.array(jax.local_devices()), (DATA_AXIS,))


def put_batch(x, mesh=None):
    """``x`` on the devices, split along its first axis when it divides evenly over them, so
    a jitted function of it runs data-parallel; else whole on each of them (a batch that does
    not divide, e.g. one image, is computed once per device: the same devices as the
    replicated weights, the same result)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    mesh = mesh if mesh is not None else local_mesh()
    n = mesh.devices.size
    if n == 1:
        return jax.device_put(x, mesh.devices.flat[0])
    return jax.device_put(x, NamedSharding(mesh, P(DATA_AXIS) if len(x) % n == 0 else P()))


def put_replicated(tree, mesh=None):
    """``tree`` replicated over the devices of ``mesh`` (default: this process's)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    mesh = mesh if mesh is not None else local_mesh()
    if mesh.devices.size == 1:
        return jax.device_put(tree, mesh.devices.flat[0])
    return jax.device_put(tree, NamedSharding(mesh, P()))
