"""Grids of score -> prune -> recover -> export -> benchmark on one checkpoint (`edgeprune sweep`)."""
