"""Latency that follows the cut: single-layer grids timed on the target, the steps they show, and predictions."""
