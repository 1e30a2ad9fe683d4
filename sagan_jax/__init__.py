"""sagan_jax: SAGAN and its baselines in JAX. Importing the package installs the dataset
registry (sagan_jax.data) and the model registry (sagan_jax.methods) into config validation."""
from sagan_jax import data, methods  # noqa: F401
