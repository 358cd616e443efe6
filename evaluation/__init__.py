"""Evaluation: metrics and the release gate (pure functions); the harness and release arrive with issue 4."""
