"""Model lifecycle: features, training, integrity-checked artifacts and prediction."""
