import gc
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests never time DSC implementations nor write the user's autotune cache: the fixed rule.
os.environ.setdefault("SAGAN_JAX_DSC_AUTOTUNE", "0")
# One persistent XLA compilation cache per test session (inherited by subprocesses): tests that
# build the same tiny model compile it once. A fresh folder each session, so the suite's time
# on a new machine is what CI sees.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="sagan_jax_jit_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

# XLA:CPU's own operation order for the tests' processes and the subprocesses they start (the
# entry points keep a value set here): at the suite's tiny widths, where compilation dominates,
# the memory-minded order the entry points choose made the suite slower, and both orders
# compute the same bits (docs/benchmarks.md, section 8; tests/test_devices.py checks the choice).
from sagan_jax.devices import SCHEDULER_FLAGS, add_xla_flags, usable_cores  # noqa: E402

add_xla_flags({flag: "true" for flag in SCHEDULER_FLAGS})

# When the suite's workers fill the cores (`make test`: two workers, two cores), each worker and
# the subprocesses it starts compute on one thread: XLA's and PyTorch's thread pools are sized
# for the whole machine, and beside a busy worker their threads wait on each other instead of
# working (a tiny JAX-against-PyTorch training test took half again as long). `make test`'s
# second pass keeps the pools (another XLA:CPU setting for the float-sensitive tests).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and usable_cores() <= _WORKERS:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    add_xla_flags({"xla_cpu_multi_thread_eigen": "false"})

# pytest's own process uses it too; _free_compiled_programs below keeps that process under the
# kernel's limit on memory mappings (without it, XLA:CPU segfaulted or aborted about test 310).
import jax  # noqa: E402
import pytest  # noqa: E402

# The pytest processes themselves keep one CPU device (unit tests build their own meshes), and
# so do the CLI and script subprocesses unless a test passes --host_devices: the suite runs two
# workers on two cores, and a device per core in each subprocess oversubscribes them (XLA then
# aborted a starved two-device program waiting at its cross-device rendezvous).
os.environ.setdefault("SAGAN_JAX_HOST_DEVICES", "1")
jax.devices()

_TIMES = os.environ.get("SAGAN_JAX_TEST_TIMES")  # a file: "seconds<TAB>test id" per test


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop each module's compiled programs when it ends, and restore the environment it found. XLA:CPU maps a few memory regions per
    executable; one pytest process compiling thousands of them over the suite ran into the
    kernel's mapping limit (vm.max_map_count, 65530 here) and aborted inside XLA (a segfault
    while serializing for the cache, later an abort while compiling, both ~test 310)."""
    environ = dict(os.environ)
    yield
    if dict(os.environ) != environ:  # a module's variables never reach the next module's tests
        os.environ.clear()
        os.environ.update(environ)
    before = _maps()
    jax.clear_caches()
    gc.collect()
    if _TIMES:
        with open(_TIMES, "a") as f:
            f.write(f"maps\t{before} -> {_maps()}\n")


def _maps() -> int:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux
        return -1


# The modules that take minutes, longest first (pytest --durations=0 on two cores); the rest
# follow in their own order. With `--dist loadfile --no-loadscope-reorder` (make test) a worker
# takes the next module when it is free, so starting with the long ones lets both finish
# together instead of one running the longest module alone at the end.
LONGEST_FIRST = ("test_runs.py", "test_checkpoints.py", "test_models.py", "test_device_check.py",
                 "test_training.py", "test_torch_train.py", "test_multiprocess.py",
                 "test_hostile_user.py", "test_inspection.py", "test_score_mode.py",
                 "test_anomaly_maps.py", "test_torch_parity.py", "test_data_mvtec.py",
                 "test_no_tensorflow.py", "test_fit_baselines.py", "test_init_jit.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_runtest_logreport(report):
    if _TIMES and report.when in ("setup", "call") and report.duration >= 0.05:
        with open(_TIMES, "a") as f:
            f.write(f"{report.duration:.1f}\t{report.nodeid} ({report.when})\n")
