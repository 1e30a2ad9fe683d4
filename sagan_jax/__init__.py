"""sagan_jax: SAGAN and its baselines in JAX. Importing the package installs the model
registry (sagan_jax.methods) into config validation."""
from sagan_jax import methods  # noqa: F401
