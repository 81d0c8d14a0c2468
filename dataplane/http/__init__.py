"""The client's side of HTTP: reading requests within limits, writing answers and errors."""
