"""Self-edit formats: how a model is asked for a self-edit, and how its answer becomes training data."""
