from torchrec_transact.models.common import TaskHeads  # noqa: F401
from torchrec_transact.models.dcn import TransActDCN  # noqa: F401
from torchrec_transact.models.dlrm import SequenceRows, TransActDLRM  # noqa: F401
from torchrec_transact.models.train import TransActTrain  # noqa: F401
