"""Presentation: figures, reports, the index of run folders."""
