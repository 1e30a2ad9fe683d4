"""Training: state, the pure training step, the data-parallel wrapper and the loop."""
