"""Offline tools: the demo, simulated users, the sweep, evaluation of pair files, load generation."""
