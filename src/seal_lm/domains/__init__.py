"""Domains: turn their inputs into self-edit prompts, training data and evaluations."""
