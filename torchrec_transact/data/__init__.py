from torchrec_transact.data.batch import TransActBatch  # noqa: F401
from torchrec_transact.data.sequences import (  # noqa: F401
    random_sequence_features,
    sequence_kjt,
    SequenceFeatures,
)
