"""Knowledge incorporation: learn a passage from self-edits, answer questions about it closed-book.

data.py (passages, documents), formats.py (self-edit prompts and parsing into training sequences),
evaluation.py (the conditions and their records), domain.py (the config and the `Domain`).
"""

from seal_lm.domains.knowledge.domain import KnowledgeConfig, KnowledgeDomain

DOMAIN = KnowledgeDomain

__all__ = ["DOMAIN", "KnowledgeConfig", "KnowledgeDomain"]
