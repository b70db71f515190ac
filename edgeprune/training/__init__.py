"""Training and evaluation shared by both frameworks."""
