"""Lowest layer: geometry, the Volume, dtypes, errors, memory and progress. Imports nothing of bigvolume above it."""
