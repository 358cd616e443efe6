"""Metrics, the evaluation harness and the gate policy (issue 4)."""
