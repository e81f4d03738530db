"""What operators see: request ids, JSON logs, Prometheus metrics."""
