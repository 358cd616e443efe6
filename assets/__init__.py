"""Dagster assets and their checks, one module per stage; thin wrappers over library code."""
