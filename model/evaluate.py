"""Evaluation protocols (seed, open) and metrics. Filled by the Siamese work."""
