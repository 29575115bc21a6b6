"""TransAct (Pinterest's realtime user-action transformer) for TorchRec models.

``TransAct`` and ``TransActConfig`` load on first use, so the encoder core
(:mod:`torchrec_transact.modules.encoder`, ``arch``, ``jagged``, ``masks``, ``config``) and the
request encoder (:mod:`torchrec_transact.serving.dedup`) import on a bare PyTorch, without
torchrec or fbgemm (``benchmarks/gpu_check.py`` runs on such a machine).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["TransAct", "TransActConfig"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'torchrec_transact' has no attribute {name!r}")
    try:
        import torchrec  # noqa: F401
    except ImportError as error:  # pragma: no cover - exercised only on a broken install
        raise ImportError(
            "torchrec_transact needs torchrec and an fbgemm build. CPU: pip install "
            "fbgemm-gpu-cpu==1.8.0 && pip install --no-deps torchrec==1.8.0 (a plain "
            "`pip install torchrec` pulls the CUDA fbgemm-gpu over the CPU one). CUDA: pip "
            "install 'torchrec_transact[cuda]'. See the README."
        ) from error
    from torchrec_transact.modules import transact

    return getattr(transact, name)
