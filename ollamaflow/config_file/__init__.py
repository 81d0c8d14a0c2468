"""Configuration as code: the cluster file (``ollamaflow apply``/``export``/``import``).

``model`` parses and checks the file, ``secrets`` handles its environment references, ``plan`` diffs
it against the admin API's state and orders the changes, ``export`` and ``original`` write the file
from the API's state or from an OllamaFlow (C#) installation. All of these are pure; ``run`` talks to
the admin API and ``render`` prints plans.
"""
