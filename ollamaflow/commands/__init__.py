"""One module per sub-command; each imports only typer at module level."""
