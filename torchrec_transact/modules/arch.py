#!/usr/bin/env python3
"""TransAct's sequence arch: the tokens of the kept actions, the transformer encoder on
length buckets, and the compression to the latest ``latest_k`` output tokens plus a max
pool. Needs only torch (the KJT types are for annotation), so the encoder core runs on a
bare PyTorch install: ``encode`` takes plain tensors.
"""

from typing import Any, Dict, List, Optional, TYPE_CHECKING

import torch
from torch import nn

from torchrec_transact.modules.compiled import CompiledOrEager
from torchrec_transact.modules.config import TransActConfig
from torchrec_transact.modules.encoder import EncoderConfig, TransformerEncoder
from torchrec_transact.modules.jagged import length_buckets, pad_into_buckets
from torchrec_transact.modules.masks import kept_actions, zero_gradient_output

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
        self.reset_parameters()
        num_positions = config.max_seq_len + int(config.early_fusion == "append")
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

    # compile_encoder(); a class default, so modules pickled before it existed load too.
    _compiled: Optional[CompiledOrEager] = None

    def __getstate__(self) -> Dict[str, Any]:
        # The compiled function does not pickle: keep whether there was one and compile
        # again on load.
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["_compiled"] = None
        state["_compile_on_load"] = self._compiled is not None
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
    ) -> torch.Tensor:
        """
        Args:
            features (KeyedJaggedTensor): the TransAct input (action types and ages).
            item_embeddings (JaggedTensor): [N, item_dim], one per sequence action.
            candidate_embeddings (JaggedTensor): [B, item_dim], one per example.

        Returns:
            torch.Tensor: float [B, output_dim]; zeros for an example with no kept action
            (and no candidate token).
        """
        items = features[self.config.item_feature]
        return self.encode(
            items.lengths(), items.weights(), features[self.config.action_feature].values(),
            item_embeddings.values(), candidate_embeddings.values(),
        )

    def encode(
        self,
        lengths: torch.Tensor,
        ages: torch.Tensor,
        action_types: torch.Tensor,
        item_embeddings: torch.Tensor,
        candidate_embeddings: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`forward` on plain tensors (no torchrec needed).

        Args:
            lengths (torch.Tensor): int [B], actions per example, most recent first.
            ages (torch.Tensor): float [M], each action's age in seconds.
            action_types (torch.Tensor): int [M].
            item_embeddings (torch.Tensor): [M, item_dim].
            candidate_embeddings (torch.Tensor): [B, item_dim].

        Returns:
            torch.Tensor: float [B, output_dim].
        """
        config = self.config
        kept = kept_actions(lengths, ages, config.max_seq_len, config.time_window_s, self.training)
        example, position, kept_lengths = kept.example, kept.position, kept.lengths
        batch_size = kept_lengths.numel()
        # Gathered in the encoder's precision and written once by a single cat.
        dtype = self._token_dtype(item_embeddings.device.type)
        pieces = [item_embeddings[kept.index].to(dtype)]
        if self.action_embedding is not None:
            pieces.insert(0, self.action_embedding(action_types[kept.index].long()).to(dtype))
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
        if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return self.encoder.layers[0].in_proj_weight.dtype

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
            # (no indices) is 6x faster in float32.
            if x.requires_grad:
                parts.append(x.max(dim=1).values)
            else:
                parts.append(x.amax(dim=1))
        return torch.cat(parts, dim=1)


def _encode_bucket(arch: TransActSequenceArch, x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """``arch._encode_bucket`` as a function of the module (what ``compile_encoder`` compiles)."""
    return arch._encode_bucket(x, valid)
