"""Training: the model, the ensemble's compiled step and schedule, probes, devices, memory footprint."""
