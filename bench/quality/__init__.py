"""The quality protocol of SPEC §8: QLAB-X against X over a learning-rate grid, on CPU-sized tasks."""
