"""TransAct (Pinterest's realtime user-action transformer) for TorchRec models."""

try:
    import torchrec  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "torchrec_transact needs torchrec and an fbgemm build. CPU: pip install "
        "fbgemm-gpu-cpu==1.8.0 && pip install --no-deps torchrec==1.8.0 (a plain "
        "`pip install torchrec` pulls the CUDA fbgemm-gpu over the CPU one). CUDA: pip "
        "install 'torchrec_transact[cuda]'. See the README."
    ) from error

from torchrec_transact.modules.transact import TransAct, TransActConfig  # noqa: F401,E402

__version__ = "0.1.0"
