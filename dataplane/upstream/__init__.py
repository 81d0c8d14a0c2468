"""The backend leg: the upstream client's contract and its two implementations."""
