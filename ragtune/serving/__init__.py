"""Serving: answers with citations from the champion (ragtune ask) over HTTP (ragtune serve)."""
