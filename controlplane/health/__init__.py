"""Active health probing and model inventory of the backends (state machine, probes, the monitor)."""
