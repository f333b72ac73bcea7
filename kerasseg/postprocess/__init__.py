"""kerasseg.postprocess."""
