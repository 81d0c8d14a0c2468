"""The contract between the planes: snapshot schema, bus names and client, wire types, errors.

Imports neither plane (DESIGN.md, dependency rule 2).
"""
