"""Agents: models and tokenizers, prompts, action parsing, decoding, baselines."""
