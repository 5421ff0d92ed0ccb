"""The `bigvolume` command line and its demo."""
