"""How much each backend and API key takes: admission, rate gates, breakers, counters."""
