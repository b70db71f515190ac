"""Structured pruning: remove channels for real, producing a smaller model (not a mask)."""
