"""Few-shot domain (ARC-style grid tasks): tasks, grid text, and invertible augmentations for test-time training."""
