#!/usr/bin/env python3
"""TransAct: a transformer over a user's realtime action sequence (arXiv 2306.00248).

Each kept action becomes one token. With ``early_fusion="concat"`` a token is
``[action embedding; item embedding; candidate embedding]`` (width 32 + 32 + 32); the
transformer encoder attends over the tokens of one example only; its first ``latest_k``
output tokens (the most recent interests) and a max pool over all its tokens (the longer
term) are flattened into ``(latest_k + max_pool) * d_model`` features for the ranking model.
The input layout and the choice of actions are in :mod:`torchrec_transact.modules.sequence`.
"""

from typing import Optional

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # noqa: F401 (the Example's input)

from torchrec_transact.modules.arch import TransActSequenceArch
from torchrec_transact.modules.sequence import SequenceModule, TransActConfig


class TransAct(SequenceModule):
    """TransAct realtime user-action sequence module on a ``KeyedJaggedTensor``.

    The item table is a torchrec ``EmbeddingCollection`` shared by the sequence items and
    the candidate, so ``DistributedModelParallel`` shards it and runs it on FBGEMM's
    kernels; the input KJT is handed to it untouched, so ``TrainPipelineSparseDist`` can
    prefetch its input distribution. The action-type table is small (tens of rows) and
    stays a dense, data-parallel ``nn.Embedding``.

    Which actions are seen:

    * leakage (negative age: logged after the request) never, in training or evaluation;
    * only the ``max_seq_len`` most recent of the remaining ones;
    * in training only, each example draws T ~ U[0, time_window_s) from torch's generator
      and drops its actions younger than T (against the "rabbit hole").

    A dropped action is absent, not just unattended: the output equals that of the same
    sequence with the action removed. An example with no action left has a sequence part
    of zeros (finite values and gradients). Outputs never depend on the other examples of
    the batch beyond float rounding.

    Args:
        config (TransActConfig): module configuration.
        device (Optional[torch.device]): device of the parameters.

    Returns (of ``forward``):
        torch.Tensor: [B, output_dim] with ``output_dim = (latest_k + max_pool) * d_model``.

    Example::

        config = TransActConfig(num_action_types=4, num_items=100)
        transact = TransAct(config)
        #                 example 0    example 1
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=["action_type", "item_id", "candidate_item_id"],
            values=torch.tensor([1, 0, 2,   3, 17, 5,   42, 7]),
            lengths=torch.tensor([2, 1,   2, 1,   1, 1]),
            weights=torch.tensor([30.0, 600.0, 5.0,   30.0, 600.0, 5.0,   0.0, 0.0]),
        )
        out = transact(features)  # [2, transact.output_dim] == [2, 11 * 96]
    """

    def __init__(
        self, config: TransActConfig, device: Optional[torch.device] = None
    ) -> None:
        super().__init__(
            config,
            TransActSequenceArch(config, device),
            output_tokens=config.latest_k + int(config.max_pool),
            token_dim=config.d_model,
            device=device,
        )

    @property
    def transformer(self) -> TransActSequenceArch:
        """The transformer arch (tokens, encoder, compression) after the item lookup."""
        return self.sequence_arch
