"""RAFT dataset building, base-model provisioning and the TRL SFT entry point (issue 3)."""
