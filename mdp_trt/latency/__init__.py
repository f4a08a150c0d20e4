"""Latency measurement: backends behind one protocol (``backends``) and the bilayer tables built
from them (``tables``)."""
