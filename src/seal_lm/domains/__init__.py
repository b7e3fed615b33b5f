"""The domains, by name. A domain package exports `DOMAIN`: a class with `name`, `config_class` and the
methods of `seal_lm.domain.Domain`; its presets are `seal_lm/configs/<name>/*.yaml`."""

from __future__ import annotations

import importlib

from seal_lm.errors import SealError

DOMAINS = {"knowledge": "seal_lm.domains.knowledge", "arc": "seal_lm.domains.arc"}


def domain_class(name: str) -> type:
    if name not in DOMAINS:
        raise SealError(f"unknown domain '{name}' (choose one of: {', '.join(DOMAINS)})")
    return importlib.import_module(DOMAINS[name]).DOMAIN
