"""The one writer (safety invariant 1): the only package that may import the write path."""
