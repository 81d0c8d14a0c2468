"""Where a request goes: the routing table, strategies, sticky sessions, explanations."""
