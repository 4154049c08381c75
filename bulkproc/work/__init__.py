"""Runs: batches, one row's life upstream, imports, fixes, the create-rate limiter."""
