"""Running the model in production: prediction log, drift, model reloads, shutdown."""
