"""Evaluation protocols, found by name: few-shot linear probes, fine-tuning, training from scratch (see base.py
for the interface).

Importing this package imports no torch: protocol modules load what they compute with inside `measure`.
"""
from transferscale.protocols.base import PROTOCOLS, Protocol

PROTOCOLS.register_lazy("fewshot", "transferscale.protocols.fewshot:FewShot")
PROTOCOLS.register_lazy("finetune", "transferscale.protocols.finetune:Finetune")
PROTOCOLS.register_lazy("scratch", "transferscale.protocols.scratch:Scratch")


def protocol_sections() -> dict[str, str]:
    """Spec table name -> protocol name, for every registered protocol."""
    return {PROTOCOLS.get(name).section: name for name in PROTOCOLS.list()}


__all__ = ["PROTOCOLS", "Protocol", "protocol_sections"]
