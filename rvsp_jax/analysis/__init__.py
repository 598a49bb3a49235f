"""Batched time-series and random-variable analysis of training trajectories (pure functions of arrays)."""
