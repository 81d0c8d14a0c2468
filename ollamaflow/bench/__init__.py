"""``ollamaflow bench``: the same load straight to a simulator and through a data plane, in one run."""
