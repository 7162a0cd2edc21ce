"""Callbacks that write analyses into the run directory and hand each file to every logger."""
