"""The language model: the base model, prompts, generation and constrained decoding."""
