"""Sequence encoders. The encoder core (``config``, ``encoder``, ``arch``, ``jagged``,
``masks``, ``dropout``) needs only torch; the modules on KJTs (``sequence``, ``transact``,
``baselines``) need torchrec and load on first use."""

from torchrec_transact._lazy import lazy_exports

_WHERE = {
    "EncoderConfig": "encoder", "TransformerEncoder": "encoder", "TransformerEncoderLayer": "encoder",
    "TransActConfig": "config", "TransActSequenceArch": "arch",
    "select_actions": "sequence", "SequenceModule": "sequence", "TransAct": "transact",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _WHERE.items()})
