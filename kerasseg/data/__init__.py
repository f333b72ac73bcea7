"""kerasseg.data."""
