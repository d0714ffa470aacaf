"""evalign-jax: facial keypoint alignment with event cameras, in JAX."""

__version__ = "0.1.0"
