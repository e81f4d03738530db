"""HTTP layer of the housing-price inference API."""
