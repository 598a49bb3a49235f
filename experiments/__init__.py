"""Thin command-line experiments: parse flags, call into rvsp_jax, write results (python -m experiments.<name>)."""
