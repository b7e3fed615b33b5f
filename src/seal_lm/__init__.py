"""seal-lm: Self-Adapting Language Models (SEAL, Zweiger et al. 2025) that run anywhere."""

__version__ = "0.1.0"
