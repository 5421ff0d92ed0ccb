"""User-level operations: resample, stack import, haze removal, precision reduction."""
