#!/usr/bin/env python3
"""Baseline action-sequence encoders, for the paper's comparison of encoders.

Every encoder takes the same input KJT as :class:`TransAct` and returns ``[B, output_dim]``
(``output_tokens`` rows of ``token_dim``), so a ranking model swaps them by name through
:func:`build_sequence_encoder`. They see the same actions as TransAct: leakage removed, the
``max_seq_len`` most recent kept and, in training, the same random time window
(``time_window_s``; 0 turns it off). The window is a training-time mask on the input, not
a part of the encoder, so a comparison of encoders changes only the encoder.

=====================  ========================================================
name                   encoder
=====================  ========================================================
``none``               :class:`NoSequence`: no sequence features at all
``avg_pool``           :class:`AveragePooling`: mean of [action; item] tokens
``cnn``                :class:`CNNEncoder`: 1-D convolution, max pool over time
``rnn``                :class:`RNNEncoder`: GRU over the sequence, oldest first
``lstm``               :class:`LSTMEncoder`: LSTM over the sequence, oldest first
``vanilla_transformer``:class:`VanillaTransformer`: item tokens only, no early fusion
``bst``                :class:`BST`: candidate appended as a token, positional embeddings
``bst_action``         :class:`BSTWithActions`: BST with the action embedding
``transact``           :class:`TransAct`
=====================  ========================================================
"""

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from torchrec_transact.modules.masks import KeptActions, zero_gradient_output
from torchrec_transact.modules.sequence import select_actions, SequenceModule, TransActConfig
from torchrec_transact.modules.transact import TransAct


class NoSequence(nn.Module):
    """The model without a sequence: ``[B, 0]``.

    Args:
        config (TransActConfig): only the candidate key is read (for the batch size).
        device (Optional[torch.device]): unused; there are no parameters.

    Example::

        encoder = NoSequence(TransActConfig(num_action_types=3, num_items=10))
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=["candidate_item_id"], values=torch.tensor([1, 2]),
            lengths=torch.tensor([1, 1]),
        )
        encoder(features).shape  # torch.Size([2, 0])
    """

    output_tokens: int = 0
    token_dim: int = 0
    output_dim: int = 0

    def __init__(
        self, config: TransActConfig, device: Optional[torch.device] = None
    ) -> None:
        super().__init__()
        self.config = config

    @property
    def item_table(self) -> None:
        return None

    @property
    def transformer(self) -> None:
        return None

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        batch_size = features[self.config.candidate_feature].lengths().numel()
        return torch.zeros(batch_size, 0, device=features.values().device)


class _ActionItemTokens(nn.Module):
    """[action embedding; item embedding] of the kept actions, in jagged layout."""

    def __init__(self, config: TransActConfig, device: Optional[torch.device]) -> None:
        super().__init__()
        self.config = config
        self.action_embedding = nn.Embedding(
            config.num_action_types, config.action_embedding_dim, device=device
        )

    @property
    def dim(self) -> int:
        return self.config.action_embedding_dim + self.config.item_embedding_dim

    def forward(
        self, features: KeyedJaggedTensor, item_embeddings: JaggedTensor
    ) -> Tuple[torch.Tensor, KeptActions]:
        config = self.config
        kept = select_actions(
            features[config.item_feature], config.max_seq_len, config.time_window_s, self.training
        )
        actions = features[config.action_feature].values()[kept.index].long()
        tokens = torch.cat(
            [self.action_embedding(actions), item_embeddings.values()[kept.index]], dim=1
        )
        return tokens, kept


def _pad(tokens: torch.Tensor, kept: KeptActions, chronological: bool) -> torch.Tensor:
    """[M, d] jagged tokens -> [B, L, d] zero-padded, L the longest kept sequence (>= 1).

    Most recent first by default; ``chronological`` puts the oldest action first."""
    batch_size = kept.lengths.numel()
    max_len = max(1, int(kept.lengths.max())) if batch_size else 1
    position = kept.position
    if chronological:
        position = kept.lengths[kept.example] - 1 - position
    padded = tokens.new_zeros(batch_size * max_len, tokens.shape[1])
    padded = padded.index_copy(0, kept.example * max_len + position, tokens)
    return padded.view(batch_size, max_len, tokens.shape[1])


class _AveragePoolingArch(nn.Module):
    def __init__(self, config: TransActConfig, device: Optional[torch.device]) -> None:
        super().__init__()
        self.tokens = _ActionItemTokens(config, device)

    def forward(
        self, features: KeyedJaggedTensor, items: JaggedTensor, candidates: JaggedTensor
    ) -> torch.Tensor:
        tokens, kept = self.tokens(features, items)
        sums = tokens.new_zeros(kept.lengths.numel(), tokens.shape[1])
        sums = sums.index_add(0, kept.example, tokens)
        return sums / kept.lengths.clamp(min=1).unsqueeze(1).to(sums.dtype)


class AveragePooling(SequenceModule):
    """Mean of the [action; item] embeddings of the kept actions (zeros when none).

    Args:
        config (TransActConfig): keys, vocabularies, ``action_embedding_dim``,
            ``item_embedding_dim`` and ``max_seq_len``.
        device (Optional[torch.device]): device of the parameters.

    Example::

        encoder = AveragePooling(TransActConfig(num_action_types=3, num_items=10))
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=["action_type", "item_id", "candidate_item_id"],
            values=torch.tensor([1, 2, 4, 5, 6, 7]),
            lengths=torch.tensor([2, 0, 2, 0, 1, 1]),
            weights=torch.tensor([5.0, 9.0, 5.0, 9.0, 0.0, 0.0]),
        )
        encoder(features).shape  # torch.Size([2, 64])
    """

    def __init__(
        self, config: TransActConfig, device: Optional[torch.device] = None
    ) -> None:
        arch = _AveragePoolingArch(config, device)
        super().__init__(config, arch, 1, arch.tokens.dim, device)


class _CNNArch(nn.Module):
    def __init__(
        self, config: TransActConfig, kernel_size: int, device: Optional[torch.device]
    ) -> None:
        super().__init__()
        self.tokens = _ActionItemTokens(config, device)
        dim = self.tokens.dim
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, device=device)

    def forward(
        self, features: KeyedJaggedTensor, items: JaggedTensor, candidates: JaggedTensor
    ) -> torch.Tensor:
        tokens, kept = self.tokens(features, items)
        padded = _pad(tokens, kept, chronological=False)  # [B, L, d]
        hidden = torch.relu(self.conv(padded.transpose(1, 2))).transpose(1, 2)
        steps = torch.arange(padded.shape[1], device=padded.device)
        valid = steps[None, :] < kept.lengths[:, None]
        pooled = hidden.masked_fill(~valid[:, :, None], float("-inf")).max(dim=1).values
        # An example with no action has no position to pool: zeros, not -inf.
        return torch.where((kept.lengths > 0)[:, None], pooled, torch.zeros_like(pooled))


class CNNEncoder(SequenceModule):
    """A 1-D convolution over the [action; item] tokens, ReLU, max pool over time.

    Args:
        config (TransActConfig): keys, vocabularies and embedding widths.
        kernel_size (int): odd width of the convolution window.
        device (Optional[torch.device]): device of the parameters.

    Example::

        encoder = CNNEncoder(TransActConfig(num_action_types=3, num_items=10))
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=["action_type", "item_id", "candidate_item_id"],
            values=torch.tensor([1, 2, 4, 5, 6, 7]),
            lengths=torch.tensor([2, 0, 2, 0, 1, 1]),
            weights=torch.tensor([5.0, 9.0, 5.0, 9.0, 0.0, 0.0]),
        )
        encoder(features).shape  # torch.Size([2, 64])
    """

    def __init__(
        self,
        config: TransActConfig,
        kernel_size: int = 3,
        device: Optional[torch.device] = None,
    ) -> None:
        arch = _CNNArch(config, kernel_size, device)
        super().__init__(config, arch, 1, arch.tokens.dim, device)


class _RecurrentArch(nn.Module):
    def __init__(
        self, config: TransActConfig, cell: str, device: Optional[torch.device]
    ) -> None:
        super().__init__()
        self.tokens = _ActionItemTokens(config, device)
        rnn_class = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn_class(
            self.tokens.dim, self.tokens.dim, batch_first=True, device=device
        )

    def forward(
        self, features: KeyedJaggedTensor, items: JaggedTensor, candidates: JaggedTensor
    ) -> torch.Tensor:
        tokens, kept = self.tokens(features, items)
        out = tokens.new_zeros(kept.lengths.numel(), self.tokens.dim)
        nonempty = (kept.lengths > 0).nonzero().squeeze(1)
        if nonempty.numel() == 0:
            return zero_gradient_output(self, out, tokens)
        # Oldest first, so the final state is the one that has just read the latest action.
        padded = _pad(tokens, kept, chronological=True)[nonempty]
        packed = nn.utils.rnn.pack_padded_sequence(
            padded, kept.lengths[nonempty].cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.rnn(packed)
        final = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
        return out.index_copy(0, nonempty, final[-1])


class RNNEncoder(SequenceModule):
    """A GRU over the [action; item] tokens, oldest first; its final state.

    Args:
        config (TransActConfig): keys, vocabularies and embedding widths.
        device (Optional[torch.device]): device of the parameters.

    Example::

        encoder = RNNEncoder(TransActConfig(num_action_types=3, num_items=10))
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=["action_type", "item_id", "candidate_item_id"],
            values=torch.tensor([1, 2, 4, 5, 6, 7]),
            lengths=torch.tensor([2, 0, 2, 0, 1, 1]),
            weights=torch.tensor([5.0, 9.0, 5.0, 9.0, 0.0, 0.0]),
        )
        encoder(features).shape  # torch.Size([2, 64])
    """

    cell: str = "gru"

    def __init__(
        self, config: TransActConfig, device: Optional[torch.device] = None
    ) -> None:
        arch = _RecurrentArch(config, self.cell, device)
        super().__init__(config, arch, 1, arch.tokens.dim, device)


class LSTMEncoder(RNNEncoder):
    """An LSTM over the [action; item] tokens, oldest first; its final hidden state.

    Args:
        config (TransActConfig): keys, vocabularies and embedding widths.
        device (Optional[torch.device]): device of the parameters.

    Example::

        encoder = LSTMEncoder(TransActConfig(num_action_types=3, num_items=10))
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=["action_type", "item_id", "candidate_item_id"],
            values=torch.tensor([1, 2, 4, 5, 6, 7]),
            lengths=torch.tensor([2, 0, 2, 0, 1, 1]),
            weights=torch.tensor([5.0, 9.0, 5.0, 9.0, 0.0, 0.0]),
        )
        encoder(features).shape  # torch.Size([2, 64])
    """

    cell = "lstm"


class VanillaTransformer(TransAct):
    """A transformer over item embeddings only: no action embedding, no early fusion;
    same encoder, time window and output compression as TransAct.

    Args:
        config (TransActConfig): the TransAct config; its action and fusion settings are
            overridden.
        device (Optional[torch.device]): device of the parameters.

    Example::

        encoder = VanillaTransformer(TransActConfig(num_action_types=3, num_items=10))
        encoder.output_dim  # (10 + 1) * 32
    """

    def __init__(
        self, config: TransActConfig, device: Optional[torch.device] = None
    ) -> None:
        super().__init__(
            dataclasses.replace(
                config, action_embedding_dim=0, early_fusion="none"
            ),
            device,
        )


class BST(TransAct):
    """Behavior Sequence Transformer (Alibaba, 2019): the candidate is one more token of
    the sequence and tokens carry learned positional embeddings; item embeddings only.

    Args:
        config (TransActConfig): the TransAct config; its action, fusion and position
            settings are overridden.
        device (Optional[torch.device]): device of the parameters.

    Example::

        encoder = BST(TransActConfig(num_action_types=3, num_items=10))
        encoder.output_dim  # (10 + 1) * 32
    """

    with_actions: bool = False

    def __init__(
        self, config: TransActConfig, device: Optional[torch.device] = None
    ) -> None:
        overrides = dict(early_fusion="append", positional_encoding=True)
        if not self.with_actions:
            overrides["action_embedding_dim"] = 0
        super().__init__(dataclasses.replace(config, **overrides), device)


class BSTWithActions(BST):
    """BST with the action embedding in its tokens (the BST paper's "other features"), so
    it can tell a hated history item from a liked one: tokens ``[action; item]``.

    Example::

        encoder = BSTWithActions(TransActConfig(num_action_types=3, num_items=10))
        encoder.output_dim  # (10 + 1) * 64
    """

    with_actions = True


SEQUENCE_ENCODERS: Dict[str, Callable[..., nn.Module]] = {
    "transact": TransAct,
    "none": NoSequence,
    "avg_pool": AveragePooling,
    "cnn": CNNEncoder,
    "rnn": RNNEncoder,
    "lstm": LSTMEncoder,
    "vanilla_transformer": VanillaTransformer,
    "bst": BST,
    "bst_action": BSTWithActions,
}


def build_sequence_encoder(
    name: str, config: TransActConfig, device: Optional[torch.device] = None
) -> nn.Module:
    """Builds a sequence encoder by registry name.

    Args:
        name (str): a key of ``SEQUENCE_ENCODERS``.
        config (TransActConfig): shared configuration.
        device (Optional[torch.device]): device of the parameters.

    Returns:
        nn.Module: a :class:`~torchrec_transact.modules.sequence.SequenceEncoder`.

    Example::

        encoder = build_sequence_encoder("lstm", TransActConfig(num_action_types=3, num_items=10))
        encoder.output_dim  # 64
    """
    if name not in SEQUENCE_ENCODERS:
        raise ValueError(
            f"unknown sequence encoder {name!r}; known: {sorted(SEQUENCE_ENCODERS)}"
        )
    return SEQUENCE_ENCODERS[name](config, device=device)
