#!/usr/bin/env python3
"""TransAct written the way Pinterest's public reference implementation does it.

Kept as a yardstick for benchmarks: every sequence padded to ``max_seq_len``,
``nn.TransformerEncoder`` with a key padding mask, the first K output tokens and a max pool
over *all* positions (padding included). Its known shortcomings, which :class:`TransAct`
fixes, are left in on purpose: masked actions still reach the output through their own
token, padding costs as much as real actions, and an all-masked row gives NaN.
"""

from typing import Optional

import torch
from torch import nn

from torchrec_transact.modules.transact import TransActConfig


class PaddedTransActReference(nn.Module):
    """Dense-padded TransAct over [B, max_seq_len] tensors (concat fusion only).

    Args:
        config (TransActConfig): sizes; ``early_fusion`` must be ``"concat"``.

    Example::

        config = TransActConfig(num_action_types=4, num_items=100, max_seq_len=5)
        reference = PaddedTransActReference(config)
        actions = torch.randint(0, 4, (2, 5))
        items = torch.randint(0, 100, (2, 5))
        ages = torch.rand(2, 5) * 1000
        valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
        out = reference(actions, items, ages, torch.tensor([3, 7]), valid)  # [2, 11 * 96]
    """

    def __init__(self, config: TransActConfig) -> None:
        super().__init__()
        if config.early_fusion != "concat":
            raise ValueError("the reference implements concat fusion only")
        self.config = config
        self.action_embedding = nn.Embedding(
            config.num_action_types, config.action_embedding_dim
        )
        self.item_embedding = nn.Embedding(config.num_items, config.item_embedding_dim)
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.num_heads,
            config.ffn_dim,
            config.dropout,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, config.num_layers, enable_nested_tensor=False
        )

    def forward(
        self,
        actions: torch.Tensor,
        items: torch.Tensor,
        ages: torch.Tensor,
        candidates: torch.Tensor,
        valid: torch.Tensor,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """
        Args:
            actions (torch.Tensor): int [B, S] action types, zero-padded.
            items (torch.Tensor): int [B, S] item ids, zero-padded.
            ages (torch.Tensor): float [B, S] seconds before the request.
            candidates (torch.Tensor): int [B] candidate ids.
            valid (torch.Tensor): bool [B, S], False at padding.
            generator (Optional[torch.Generator]): for the time-window draw.

        Returns:
            torch.Tensor: [B, (latest_k + max_pool) * d_model].
        """
        seq_len = actions.shape[1]
        candidate = self.item_embedding(candidates)[:, None, :].expand(-1, seq_len, -1)
        tokens = torch.cat(
            [self.action_embedding(actions), self.item_embedding(items), candidate], dim=2
        )
        attend = valid & (ages >= 0)
        if self.training and self.config.time_window_s > 0:
            window = torch.rand(ages.shape[0], 1, generator=generator, device=ages.device)
            attend = attend & (ages >= window * self.config.time_window_s)
        out = self.encoder(tokens, src_key_padding_mask=~attend)
        parts = [out[:, : self.config.latest_k].flatten(1)]
        if self.config.max_pool:
            parts.append(out.amax(dim=1))
        return torch.cat(parts, dim=1)
