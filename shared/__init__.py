"""The contract between the planes: snapshot schema, bus names and client, wire types, errors.

Imports neither plane, nor a web framework, ORM or HTTP client (the import-linter contracts in
pyproject.toml; see the README's Layout section).
"""
