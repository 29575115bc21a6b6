from torchrec_transact.data.batch import TransActBatch  # noqa: F401
from torchrec_transact.data.kjt import (  # noqa: F401
    random_sequence_features,
    sequence_kjt,
    SequenceFeatures,
)
