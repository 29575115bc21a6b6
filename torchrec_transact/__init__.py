"""TransAct (Pinterest's realtime user-action transformer) for TorchRec models.

``TransAct`` and the subpackages load on first use, so the encoder core
(:mod:`torchrec_transact.modules.encoder`, ``arch``, ``jagged``, ``masks``, ``config``) and the
request encoder (:mod:`torchrec_transact.serving.dedup`) import on a bare PyTorch, without
torchrec or fbgemm (``benchmarks/gpu_check.py`` runs on such a machine).
"""

from torchrec_transact._lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["TransAct", "TransActConfig"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"TransAct": "torchrec_transact.modules.transact", "TransActConfig": "torchrec_transact.modules.config"},
    missing=(
        "torchrec_transact needs torchrec and an fbgemm build. CPU: pip install "
        "fbgemm-gpu-cpu==1.8.0 && pip install --no-deps torchrec==1.8.0 (a plain "
        "`pip install torchrec` pulls the CUDA fbgemm-gpu over the CPU one). CUDA: pip "
        "install 'torchrec_transact[cuda]'. See the README."
    ),
)
