from torchrec_transact.models.dcn import TransActDCN  # noqa: F401
from torchrec_transact.models.dlrm import SequenceRows, TransActDLRM  # noqa: F401
from torchrec_transact.models.heads import TaskHeads  # noqa: F401
from torchrec_transact.models.protocol import RankingModel  # noqa: F401
from torchrec_transact.models.train_wrapper import TransActTrain  # noqa: F401
