"""Southbound I/O: protocol drivers and the pure codecs they share with the plant simulator."""
