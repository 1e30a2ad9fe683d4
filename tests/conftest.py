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

# ... but not in pytest's own process. There, after a few hundred compilations (the torch
# tests' chunk program, about test 308 of 316), XLA:CPU segfaulted while serializing an
# executable for the cache (jax 0.10.2, compilation_cache.put_executable_and_time; seen in CI
# and reproduced here; the same test alone passes). In-process tests keep jax's in-memory
# caches; the subprocess tests, which inherit the variables above, share the persistent one.
import jax  # noqa: E402

jax.config.update("jax_enable_compilation_cache", False)
