"""Run by test_devices.py in a subprocess: two host devices meet at a cross-device sum while
one of them is held back ``sys.argv[1]`` seconds (a device starved by a loaded machine)."""
import sys
import time

from sagan_jax.devices import configure

configure("2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import io_callback  # noqa: E402
from jax.sharding import Mesh, PartitionSpec as P  # noqa: E402

delay = float(sys.argv[1])


def hold(i):
    if int(i) == 0:
        time.sleep(delay)
    return np.zeros((), np.float32)


def body(x):
    late = io_callback(hold, jax.ShapeDtypeStruct((), jnp.float32), jax.lax.axis_index("d"))
    return jax.lax.psum(x + late, "d")


mesh = Mesh(np.array(jax.devices()), ("d",))
f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P()))
print(float(f(jnp.ones(2)).sum()))
