"""The admin API under ``/v1.0``: OllamaFlow-compatible frontends and backends, plus cluster views."""
