"""The behaviour layer: the interaction log, PII redaction, curation, training datasets, erasure."""
