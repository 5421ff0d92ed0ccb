"""Adapters between bigvolume and Slicer's MRML nodes (duck-typed); imported by the Slicer modules only."""
