"""Latency measurement: backends behind one protocol, bilayer tables, and their persistent cache."""
