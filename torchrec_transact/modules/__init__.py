"""Sequence encoders. The encoder core (``config``, ``encoder``, ``arch``, ``jagged``,
``masks``, ``dropout``) needs only torch; the modules on KJTs (``sequence``, ``transact``,
``baselines``) need torchrec and load on first use."""

import importlib
from typing import Any

_WHERE = {
    "EncoderConfig": "encoder", "TransformerEncoder": "encoder", "TransformerEncoderLayer": "encoder",
    "TransActConfig": "config", "TransActSequenceArch": "arch",
    "select_actions": "sequence", "SequenceModule": "sequence", "TransAct": "transact",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'torchrec_transact.modules' has no attribute {name!r}")
    return getattr(importlib.import_module(f"torchrec_transact.modules.{_WHERE[name]}"), name)
