from torchrec_transact.modules.encoder import (  # noqa: F401
    EncoderConfig,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from torchrec_transact.modules.sequence import (  # noqa: F401
    select_actions,
    SequenceModule,
    TransActConfig,
)
from torchrec_transact.modules.transact import TransAct, TransActSequenceArch  # noqa: F401
