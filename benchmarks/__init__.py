"""Scripts that print measured figures (python -m benchmarks.<name>); not tests."""
