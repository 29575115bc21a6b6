#!/usr/bin/env python3
"""TransAct's sequence arch: the tokens of the kept actions, the transformer encoder on
length buckets, and the compression to the latest ``latest_k`` output tokens plus a max
pool. Needs only torch (the KJT types are for annotation), so the encoder core runs on a
bare PyTorch install: ``encode`` takes plain tensors.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, TYPE_CHECKING

import torch
from torch import nn

from torchrec_transact.modules.compiled import CompiledOrEager
from torchrec_transact.modules.config import TransActConfig
from torchrec_transact.modules.encoder import autocast_dtype, EncoderConfig, TransformerEncoder
from torchrec_transact.modules.jagged import length_buckets, pad_into_buckets
from torchrec_transact.modules.lifelong import select_lifelong
from torchrec_transact.modules.masks import kept_actions, KeptActions, zero_gradient_output

if TYPE_CHECKING:
    from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor


class TransActSequenceArch(nn.Module):
    """Action sequence -> compressed transformer output, after the item lookup.

    Builds the tokens of the kept actions (see :mod:`torchrec_transact.modules.masks`),
    runs the encoder on length buckets and compresses each example to its first
    ``latest_k`` output tokens plus a max pool. It holds no sharded module, so torchrec's
    pipeline tracer treats it as a leaf and its data-dependent shapes never reach fx.

    Args:
        config (TransActConfig): module configuration.
        device (Optional[torch.device]): device of the parameters.

    Example::

        config = TransActConfig(num_action_types=3, num_items=10, latest_k=2)
        arch = TransActSequenceArch(config)
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=["action_type", "item_id", "candidate_item_id"],
            values=torch.tensor([1, 0, 4, 5, 6, 7]),
            lengths=torch.tensor([1, 1, 1, 1, 1, 1]),
            weights=torch.tensor([10.0, 20.0, 10.0, 20.0, 0.0, 0.0]),
        )
        items = JaggedTensor(values=torch.randn(2, 32), lengths=torch.tensor([1, 1]))
        candidates = JaggedTensor(values=torch.randn(2, 32), lengths=torch.tensor([1, 1]))
        out = arch(features, items, candidates)  # [2, 3 * 96]
    """

    def __init__(
        self, config: TransActConfig, device: Optional[torch.device] = None
    ) -> None:
        super().__init__()
        self.config = config
        # Small (tens of rows): a dense, data-parallel table. Width 0 drops it (the
        # "no action embedding" ablation, and the vanilla transformer baseline).
        self.action_embedding: Optional[nn.Embedding] = (
            nn.Embedding(config.num_action_types, config.action_embedding_dim, device=device)
            if config.action_embedding_dim > 0
            else None
        )
        # "append" fusion: the candidate token has no action; it gets a learned one.
        self.candidate_action: Optional[nn.Parameter] = (
            nn.Parameter(torch.zeros(config.action_embedding_dim, device=device))
            if config.early_fusion == "append"
            else None
        )
        # TransAct V2: realtime, lifelong and impression tokens are told apart by a learned
        # embedding added to their action part (absent in V1, so V1 checkpoints load).
        self.sequence_type_embedding: Optional[nn.Embedding] = (
            nn.Embedding(3, config.action_embedding_dim, device=device) if config.side_sequences else None
        )
        # TransAct V2's Next Action Loss: the candidate-free encoding -> an item vector.
        self.next_action_head: Optional[nn.Linear] = (
            nn.Linear(config.output_dim, config.item_embedding_dim, device=device) if config.next_action else None
        )
        self.reset_parameters()
        num_positions = (
            config.max_seq_len
            + int(config.early_fusion == "append")
            + config.lifelong_select_k
            + (config.impression_max_len if config.impression_item_feature is not None else 0)
        )
        self.positional_embedding: Optional[nn.Embedding] = (
            nn.Embedding(num_positions, config.d_model, device=device)
            if config.positional_encoding
            else None
        )
        self.encoder = TransformerEncoder(
            EncoderConfig(
                d_model=config.d_model,
                num_layers=config.num_layers,
                num_heads=config.num_heads,
                ffn_dim=config.ffn_dim,
                dropout=config.dropout,
            ),
            device=device,
        )

    supports_side_sequences = True  # TransAct V2's lifelong and impression sequences

    # compile_encoder(); a class default, so modules pickled before it existed load too.
    _compiled: Optional[CompiledOrEager] = None
    # The Next Action Loss's inputs from the last training forward (next_action_inputs()).
    _next_action_inputs: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def __getstate__(self) -> Dict[str, Any]:
        # The compiled function does not pickle: keep whether there was one and compile
        # again on load.
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["_compiled"] = None
        state["_compile_on_load"] = self._compiled is not None
        state["_next_action_inputs"] = None  # tensors of the last step's graph
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        compile_on_load = state.pop("_compile_on_load", False)
        super().__setstate__(state)
        if compile_on_load:
            self.compile_encoder()

    def reset_parameters(self) -> None:
        """Parameters held directly here (submodules reset themselves); also called by
        DistributedModelParallel after materialising a model built on meta."""
        if self.candidate_action is not None:
            nn.init.zeros_(self.candidate_action)

    def forward(
        self,
        features: "KeyedJaggedTensor",
        item_embeddings: "JaggedTensor",
        candidate_embeddings: "JaggedTensor",
        lifelong_embeddings: Optional["JaggedTensor"] = None,
        impression_embeddings: Optional["JaggedTensor"] = None,
        lifelong_candidates: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            features (KeyedJaggedTensor): the TransAct input (action types and ages).
            item_embeddings (JaggedTensor): [N, item_dim], one per sequence action.
            candidate_embeddings (JaggedTensor): [B, item_dim], one per example.
            lifelong_embeddings (Optional[JaggedTensor]): one per lifelong action (when
                ``lifelong_select_k`` > 0).
            impression_embeddings (Optional[JaggedTensor]): one per impression (when
                ``impression_item_feature`` is set).
            lifelong_candidates (Optional[torch.Tensor]): [B, item_dim], the candidates
                in the lifelong vectors' space when those come from a frozen table.

        Returns:
            torch.Tensor: float [B, output_dim]; zeros for an example with no kept action
            (and no candidate token).
        """
        config = self.config
        items = features[config.item_feature]
        lifelong = impressions = None
        if lifelong_embeddings is not None:
            lifelong_items = features[config.lifelong_item_feature]
            lifelong = SideSequence(lifelong_items.lengths(), lifelong_items.weights(), lifelong_embeddings.values(),
                                    features[config.lifelong_action_feature].values(), lifelong_candidates)
        if impression_embeddings is not None and config.impression_item_feature is not None:
            shown = features[config.impression_item_feature]
            impressions = SideSequence(shown.lengths(), shown.weights(), impression_embeddings.values())
        return self.encode(
            items.lengths(), items.weights(), features[config.action_feature].values(),
            item_embeddings.values(), candidate_embeddings.values(), lifelong, impressions,
        )

    def encode(
        self,
        lengths: torch.Tensor,
        ages: torch.Tensor,
        action_types: torch.Tensor,
        item_embeddings: torch.Tensor,
        candidate_embeddings: torch.Tensor,
        lifelong: Optional["SideSequence"] = None,
        impressions: Optional["SideSequence"] = None,
    ) -> torch.Tensor:
        """:meth:`forward` on plain tensors (no torchrec needed).

        Args:
            lengths (torch.Tensor): int [B], actions per example, most recent first.
            ages (torch.Tensor): float [M], each action's age in seconds.
            action_types (torch.Tensor): int [M].
            item_embeddings (torch.Tensor): [M, item_dim].
            candidate_embeddings (torch.Tensor): [B, item_dim].
            lifelong (Optional[SideSequence]): TransAct V2's lifelong sequence; its
                ``lifelong_select_k`` selected actions per example join the tokens.
            impressions (Optional[SideSequence]): the impression sequence (no action
                types); its ``impression_max_len`` most recent join the tokens.

        Returns:
            torch.Tensor: float [B, output_dim].
        """
        config = self.config
        kept = kept_actions(lengths, ages, config.max_seq_len, config.time_window_s, self.training)
        batch_size = kept.lengths.numel()
        dtype = self._token_dtype(item_embeddings.device.type)
        if self.next_action_head is not None and self.training:
            self._next_action_inputs = (
                self.next_action_head(self._candidate_free(kept, action_types, item_embeddings, dtype)),
                candidate_embeddings,
            )
        if lifelong is None and impressions is None:
            example, position, kept_lengths = kept.example, kept.position, kept.lengths
            pieces = self._action_item_pieces(kept, action_types, item_embeddings, dtype)
        else:
            pieces, example, position, kept_lengths = self._joined_sequences(
                kept, action_types, item_embeddings, candidate_embeddings, lifelong, impressions, dtype)
        if config.early_fusion == "concat":
            pieces.append(candidate_embeddings.to(dtype)[example])
        tokens = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
        if self.candidate_action is not None:
            candidate_tokens = torch.cat(
                [self.candidate_action.expand(batch_size, -1), candidate_embeddings], dim=1
            )
            everyone = torch.arange(batch_size, device=kept_lengths.device)
            tokens = torch.cat([candidate_tokens, tokens])
            example = torch.cat([everyone, example])
            position = torch.cat([torch.zeros_like(everyone), position + 1])
            kept_lengths = kept_lengths + 1
        if self.positional_embedding is not None:
            tokens = tokens + self.positional_embedding(position)
        return self._encode(tokens, example, position, kept_lengths)

    def next_action_inputs(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """What the last training forward left for the Next Action Loss, then forgets it:
        each example's user vector (the realtime sequence encoded without the candidate,
        projected to the item width) and its candidate's item vector, both [B, item_dim];
        None when ``config.next_action`` is off or nothing was left."""
        inputs, self._next_action_inputs = self._next_action_inputs, None
        return inputs

    def _action_item_pieces(
        self, kept: KeptActions, action_types: torch.Tensor, item_embeddings: torch.Tensor, dtype: torch.dtype
    ) -> List[torch.Tensor]:
        """The action and item parts of the kept actions' tokens, gathered in the encoder's
        precision (the caller writes the tokens once, with a single cat)."""
        pieces = [item_embeddings[kept.index].to(dtype)]
        if self.action_embedding is not None:
            pieces.insert(0, self.action_embedding(action_types[kept.index].long()).to(dtype))
        return pieces

    def _candidate_free(
        self, kept: KeptActions, action_types: torch.Tensor, item_embeddings: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        """The compressed encoding of the kept realtime actions with the candidate left out
        (its part of each token zero; no candidate token): what the user did, not what is
        asked about, so the next item cannot be read off the input."""
        pieces = self._action_item_pieces(kept, action_types, item_embeddings, dtype)
        if self.config.early_fusion == "concat":
            pieces.append(pieces[-1].new_zeros(kept.index.numel(), self.config.item_embedding_dim))
        tokens = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
        position = kept.position
        if self.positional_embedding is not None:
            tokens = tokens + self.positional_embedding(position + int(self.candidate_action is not None))
        return self._encode(tokens, kept.example, position, kept.lengths)

    def _joined_sequences(
        self,
        kept: KeptActions,
        action_types: torch.Tensor,
        item_embeddings: torch.Tensor,
        candidate_embeddings: torch.Tensor,
        lifelong: Optional["SideSequence"],
        impressions: Optional["SideSequence"],
        dtype: torch.dtype,
    ) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """TransAct V2: the realtime, selected lifelong and impression actions of each
        example as one sequence, in that order (each most recent first). Every token's
        action part carries its sequence's type embedding; an impression has no action
        type, only that embedding.

        Returns:
            Tuple: the token pieces (action part, item part) as a list, and the example,
            position and per-example length of each joined token.
        """
        config = self.config
        assert self.action_embedding is not None and self.sequence_type_embedding is not None
        parts: List[Tuple[KeptActions, Optional[torch.Tensor], torch.Tensor]] = [(kept, action_types, item_embeddings)]
        if lifelong is not None:
            selected = select_lifelong(
                lifelong.lengths, lifelong.ages, config.lifelong_select_k, config.lifelong_max_len,
                config.lifelong_selection, lifelong.item_embeddings,
                candidate_embeddings if lifelong.candidate_embeddings is None else lifelong.candidate_embeddings,
            )
            parts.append((selected, lifelong.action_types, lifelong.item_embeddings))
        else:
            parts.append((_no_actions(kept.lengths), None, item_embeddings))
        if impressions is not None:
            shown = kept_actions(impressions.lengths, impressions.ages, config.impression_max_len, 0.0, False)
            parts.append((shown, None, impressions.item_embeddings))
        actions, items, examples, positions = [], [], [], []
        offset = torch.zeros_like(kept.lengths)
        for sequence_type, (part, types, embeddings) in enumerate(parts):
            type_vector = self.sequence_type_embedding.weight[sequence_type]
            if types is None:  # impressions: the sequence type is the whole action part
                action = type_vector.expand(part.index.numel(), -1)
            else:
                action = self.action_embedding(types[part.index].long()) + type_vector
            actions.append(action.to(dtype))
            items.append(embeddings[part.index].to(dtype))
            examples.append(part.example)
            positions.append(part.position + offset[part.example])
            offset = offset + part.lengths
        pieces = [torch.cat(actions), torch.cat(items)]
        return pieces, torch.cat(examples), torch.cat(positions), offset

    def _encode(
        self,
        tokens: torch.Tensor,
        example: torch.Tensor,
        position: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        tokens = tokens.to(self._token_dtype(tokens.device.type))
        buckets = length_buckets(
            lengths, example, position, self.config.max_length_buckets
        )
        compiled = self._compiled if not self.training and not torch.is_grad_enabled() else None
        compressed: List[torch.Tensor] = [
            compiled(self, x, valid) if compiled is not None else self._encode_bucket(x, valid)
            for x, valid in pad_into_buckets(tokens, buckets)
        ]
        out = tokens.new_zeros(lengths.numel(), self.config.output_dim, dtype=torch.float32)
        if not compressed:
            return zero_gradient_output(self, out, tokens)
        return out.index_copy(0, buckets.order, torch.cat(compressed).float())

    def _token_dtype(self, device_type: str) -> torch.dtype:
        """The residual stream's precision. Autocast runs matmuls in low precision but
        leaves the stream in the dtype it enters with; entering in that precision saves a
        cast before every projection and halves the memory traffic of the elementwise
        ops. Without autocast, the weights' (kept in low precision for inference)."""
        return autocast_dtype(device_type) or self.encoder.layers[0].in_proj_weight.dtype

    def _encode_bucket(self, x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
        """One padded bucket [b, L, d] -> its compressed output [b, output_dim]."""
        return self._compress(self.encoder(x, valid, self._shared_width), valid)

    @property
    def _shared_width(self) -> int:
        """Features equal in every token of an example: the candidate's, under concat
        fusion with no positional embedding (the first layer skips them where a softmax
        cancels them; see TransformerEncoderLayer)."""
        if self.config.early_fusion != "concat" or self.positional_embedding is not None:
            return 0
        return self.config.item_embedding_dim

    def compile_encoder(self, enabled: bool = True) -> "TransActSequenceArch":
        """Runs each bucket's encoder and compression through ``torch.compile`` (inductor,
        dynamic shapes, so the buckets' varying sizes reuse one graph per mask case) in
        evaluation mode when no gradient is taken: evaluation and serving. Training, and a
        machine where compilation fails (no C++ compiler, an unsupported backend), run the
        eager path, which computes the same function (a test compares them); a failure
        warns once.

        Args:
            enabled (bool): False returns to the eager path.

        Returns:
            TransActSequenceArch: ``self``.
        """
        self._compiled = CompiledOrEager(_encode_bucket, "the TransAct encoder", dynamic=True) if enabled else None
        return self

    def _compress(self, x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
        """[b, L, d] encoder output -> [b, (latest_k + max_pool) * d]."""
        k = self.config.latest_k
        parts: List[torch.Tensor] = []
        if valid is not None:
            # Padding must neither be a latest token nor win the max pool.
            x = x.masked_fill(~valid[:, :, None], float("-inf"))
        if k > 0:
            latest = x[:, :k]
            if valid is not None:
                latest = latest.masked_fill(~valid[:, :k, None], 0.0)
            if latest.shape[1] < k:  # every sequence of this bucket is shorter than k
                latest = torch.cat(
                    [latest, latest.new_zeros(x.shape[0], k - latest.shape[1], x.shape[2])],
                    dim=1,
                )
            parts.append(latest.flatten(1))
        if self.config.max_pool:
            # max() routes each gradient to one position; amax's backward spreads it
            # over ties and costs several passes over [b, L, d]. Without a gradient, amax
            # (no indices) is 6x faster in float32. The CPU's bf16 amax is 3x slower than
            # a float32 copy plus amax (exact: the maximum is one of the values).
            if x.requires_grad:
                parts.append(x.max(dim=1).values)
            elif x.dtype != torch.float32 and x.device.type == "cpu":
                parts.append(x.float().amax(dim=1).to(x.dtype))
            else:
                parts.append(x.amax(dim=1))
        return torch.cat(parts, dim=1)


@dataclass
class SideSequence:
    """A second action sequence of the same examples (TransAct V2's lifelong or impression
    sequence), flat jagged, most recent first.

    Args:
        lengths (torch.Tensor): int [B], actions per example.
        ages (torch.Tensor): float [M], each action's age in seconds.
        item_embeddings (torch.Tensor): [M, item_dim].
        action_types (Optional[torch.Tensor]): int [M]; None for impressions.
        candidate_embeddings (Optional[torch.Tensor]): [B, item_dim], the candidates in
            the space of ``item_embeddings`` for the nearest selection (a frozen
            pretrained lifelong table); None: the candidates' trained vectors.
    """

    lengths: torch.Tensor
    ages: torch.Tensor
    item_embeddings: torch.Tensor
    action_types: Optional[torch.Tensor] = None
    candidate_embeddings: Optional[torch.Tensor] = None


def _no_actions(lengths: torch.Tensor) -> KeptActions:
    """An empty part (no lifelong sequence given): keeps the sequence-type indices fixed."""
    empty = lengths.new_zeros(0, dtype=torch.long)
    return KeptActions(empty, empty, empty, torch.zeros_like(lengths, dtype=torch.long))


def _encode_bucket(arch: TransActSequenceArch, x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """``arch._encode_bucket`` as a function of the module (what ``compile_encoder`` compiles)."""
    return arch._encode_bucket(x, valid)
