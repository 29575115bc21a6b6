from torchrec_transact.modules.encoder import (  # noqa: F401
    EncoderConfig,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from torchrec_transact.modules.transact import (  # noqa: F401
    TransAct,
    TransActConfig,
    TransActSequenceArch,
)
