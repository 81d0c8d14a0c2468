"""One proxied request's life: accept, route, attempt, deliver."""
