"""Training: one readable recipe (`loop.py`) over a dataset with cached stage files."""
