"""Choosing a set from scores under a constraint."""
