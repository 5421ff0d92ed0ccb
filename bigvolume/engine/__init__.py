"""The slab loop that streams a volume through the filters, and its GPU stages."""
