"""What is measured: metrics, the access log and traces of proxied requests."""
