"""Few-shot ARC: the self-edit configures test-time training (augmentations, loss, learning rate, epochs).

grids.py (grids and their text), augment.py (invertible augmentations, voting), tasks.py (ARC JSON,
ARC-AGI-1, the paper's subsets, procedural tasks), formats.py (the JSON self-edit), ttt.py (test-time
training and voted prediction), domain.py (the config and the `Domain`).
"""

from seal_lm.domains.arc.domain import ArcConfig, ArcDomain

DOMAIN = ArcDomain

__all__ = ["DOMAIN", "ArcConfig", "ArcDomain"]
