#!/usr/bin/env python3
"""User-side dedup: TransAct evaluated for one request, a user's sequence scored against
many candidates with the user's part computed once.

At request time every candidate of a user shares the user's sequence, so the naive batch
(the sequence repeated once per candidate, as training sees it) looks the same items up N
times and projects the same tokens N times. With concat fusion a token is the sum of a user
part and a candidate part::

    x[c, i] = [a_i; e_i; 0] + [0; 0; e_c]          (+ p_i, the positional embedding)
              \\__ user part u_i __/  \\ cand. v_c /

so the first layer's projections split into ``W u_i`` (L rows, once per user) and
``W v_c + b`` (N rows, once per candidate). In the attention scores
``(q_u,i + q_c) . (k_u,j + k_c)`` the terms ``q_u,i . k_c`` and ``q_c . k_c`` are the same
for every key j of a query, so the softmax cancels them: the scores are a shared
``[L, L]`` matrix plus a per-candidate ``[L]`` bias ``q_c . k_u,j``. The values split the
same way, and the probabilities of a row sum to one, so the attention output is
``P_c @ (V_u W_o^T) + (v_c W_o^T + b_o)``: the first layer never projects an [N, L] token,
neither in nor out. From the first layer's feed-forward block on, every token depends on
the candidate and the layers run as usual.

With ``early_fusion="none"`` the encoder never sees the candidate and runs once per user;
with ``"append"`` only the lookups and the user tokens are shared.
"""

from contextlib import nullcontext
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from torchrec_transact.modules.encoder import autocast_dtype, TransformerEncoderLayer
from torchrec_transact.modules.arch import TransActSequenceArch
from torchrec_transact.modules.lifelong import top_k_recent_first


def _first_layer_shared(
    layer: TransformerEncoderLayer,
    user: torch.Tensor,
    candidate: torch.Tensor,
    attend: Optional[torch.Tensor],
) -> torch.Tensor:
    """The first post-norm layer on ``x[c, i] = user[i] + candidate[c]``.

    Args:
        layer (TransformerEncoderLayer): a post-norm layer in evaluation mode.
        user (torch.Tensor): [L, d], the user part of each token.
        candidate (torch.Tensor): [N, d], the candidate part.
        attend (Optional[torch.Tensor]): bool [L], keys that may be attended (at least
            one); None: all.

    Returns:
        torch.Tensor: [N, L, d], the layer's output for every (candidate, token).
    """
    length, d = user.shape
    h = layer.num_heads
    head_dim = d // h
    scale = head_dim**-0.5
    # User side without bias: the biases join the candidate side, added once per token.
    q_u, k_u, v_u = F.linear(user, layer.in_proj_weight).split(d, dim=-1)
    q_c, _, v_c = F.linear(candidate, layer.in_proj_weight, layer.in_proj_bias).split(d, dim=-1)

    def heads(t: torch.Tensor) -> torch.Tensor:  # [n, d] -> [h, n, head_dim]
        return t.reshape(-1, h, head_dim).transpose(0, 1)

    k_u_t = heads(k_u).transpose(-1, -2)  # [h, head_dim, L]
    shared = torch.matmul(heads(q_u), k_u_t) * scale  # [h, L, L], once per request
    key_bias = torch.matmul(heads(q_c), k_u_t) * scale  # [h, N, L], one row per candidate
    if attend is not None:
        key_bias = key_bias.masked_fill(~attend, float("-inf"))
    scores = shared[:, None] + key_bias[:, :, None, :]  # [h, N, L, L]
    probs = torch.softmax(scores, dim=-1)
    if h == 1:
        # One head: the output projection folds into the L user values, and all the
        # candidates' attention is one [N * L, L] x [L, d] product (matmul folds the
        # batch; a view of probs would defeat torch.export's stride reasoning).
        values = F.linear(v_u, layer.out_proj.weight)
        x = torch.matmul(probs[0].to(values.dtype), values)  # [N, L, d]
        x += user
        x += (candidate + layer.out_proj(v_c)).unsqueeze(1)
    else:
        attended = torch.matmul(probs.to(v_u.dtype), heads(v_u).unsqueeze(1))  # [h, N, L, hd]
        attended = torch.cat(attended.unbind(0), dim=-1)  # [N, L, d], heads side by side
        x = layer.out_proj(attended + v_c.unsqueeze(1))
        x += user
        x += candidate.unsqueeze(1)
    x = layer.norm1(x)
    return layer.norm2(x + layer._feed_forward(x))


class RequestTransAct(nn.Module):
    """A :class:`TransActSequenceArch` evaluated for one request: a user and N candidates.

    Shares the arch's parameters and computes, in evaluation mode, what the arch computes
    on the batch of N examples that repeats the user's sequence for each candidate (the
    actions already selected: no leakage, at most ``max_seq_len``, most recent first).
    Every tensor's shape follows from (N, L), with no data-dependent control flow, so the
    module can be exported and captured in a CUDA graph.

    Args:
        arch (TransActSequenceArch): the trained arch (TransAct, VanillaTransformer, BST).
        dedup (bool): split the first layer into user and candidate parts (concat fusion,
            post-norm). False repeats the user's tokens per candidate and runs the layers
            as they are (the lookups are still shared).

    Example::

        arch = TransActSequenceArch(TransActConfig(num_action_types=3, num_items=10, latest_k=2))
        request = RequestTransAct(arch.eval())
        out = request(
            action_types=torch.tensor([1, 0, 2]),
            item_embeddings=torch.randn(3, 32),
            candidate_embeddings=torch.randn(5, 32),
        )  # [5, 3 * 96]
    """

    def __init__(self, arch: TransActSequenceArch, dedup: bool = True) -> None:
        super().__init__()
        self.arch = arch
        layers = arch.encoder.layers
        self.dedup: bool = (
            dedup and arch.config.early_fusion == "concat" and not layers[0].norm_first
        )

    def forward(
        self,
        action_types: torch.Tensor,
        item_embeddings: torch.Tensor,
        candidate_embeddings: torch.Tensor,
        length: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            action_types (torch.Tensor): int64 [L], most recent first.
            item_embeddings (torch.Tensor): [L, item_dim].
            candidate_embeddings (torch.Tensor): [N, item_dim].
            length (Optional[torch.Tensor]): int64 [], the real actions (the rest is
                padding, which may hold any valid id); None when all L are real.

        Returns:
            torch.Tensor: float [N, output_dim], the arch's output for each candidate.
        """
        arch, config = self.arch, self.arch.config
        num_candidates = candidate_embeddings.shape[0]
        positions = torch.arange(action_types.shape[0], device=action_types.device)
        valid: Optional[torch.Tensor] = None
        attend: Optional[torch.Tensor] = None
        has_actions: Optional[torch.Tensor] = None
        if length is not None:
            valid = positions < length
            has_actions = length > 0
            # With no action, attend the padding (a finite softmax); the output is zeroed
            # below, as the arch defines it.
            attend = valid | ~has_actions
        user = item_embeddings
        if arch.action_embedding is not None:
            user = torch.cat([arch.action_embedding(action_types), user], dim=-1)

        if config.early_fusion == "none":  # candidate-free: once per request
            if arch.positional_embedding is not None:
                user = user + arch.positional_embedding(positions)
            out = arch._compress(
                arch.encoder(user[None], None if attend is None else attend[None]),
                None if valid is None else valid[None],
            )
            return self._zero_empty(out, has_actions).expand(num_candidates, -1)

        if config.early_fusion == "append":  # the candidate token comes first
            candidate = torch.cat(
                [arch.candidate_action.expand(num_candidates, -1), candidate_embeddings], dim=-1
            )
            tokens = torch.cat(
                [candidate[:, None], user[None].expand(num_candidates, -1, -1)], dim=1
            )
            if arch.positional_embedding is not None:
                tokens = tokens + arch.positional_embedding(
                    torch.arange(tokens.shape[1], device=tokens.device)
                )
            with_candidate = None
            if valid is not None:
                with_candidate = torch.cat([valid.new_ones(1), valid])[None].expand(
                    num_candidates, -1
                )
            return arch._compress(arch.encoder(tokens, with_candidate), with_candidate).float()

        # concat: a token is [user part; candidate part].
        item_dim = candidate_embeddings.shape[-1]
        user = F.pad(user, (0, item_dim))
        if arch.positional_embedding is not None:
            user = user + arch.positional_embedding(positions)
        candidate = F.pad(candidate_embeddings, (user.shape[-1] - item_dim, 0))
        dtype = autocast_dtype(user.device.type)
        if dtype is not None:
            user, candidate = user.to(dtype), candidate.to(dtype)
        layers = arch.encoder.layers
        if self.dedup:
            x = _first_layer_shared(layers[0], user, candidate, attend)
            remaining = layers[1:]
        else:
            x = user[None] + candidate[:, None]
            remaining = layers
        per_candidate = None if attend is None else attend[None].expand(num_candidates, -1)
        for layer in remaining:
            x = layer(x, per_candidate)
        out = arch._compress(
            x, None if valid is None else valid[None].expand(num_candidates, -1)
        )
        return self._zero_empty(out.float(), has_actions)

    def with_side_sequences(
        self,
        action_types: torch.Tensor,
        item_embeddings: torch.Tensor,
        candidate_embeddings: torch.Tensor,
        lifelong_action_types: Optional[torch.Tensor],
        lifelong_item_embeddings: Optional[torch.Tensor],
        impression_item_embeddings: Optional[torch.Tensor],
        lifelong_candidate_embeddings: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """TransAct V2 for one request: each candidate's tokens are the user's realtime
        actions, the ``lifelong_select_k`` lifelong actions nearest to that candidate and
        the impressions, as the arch joins them (concat fusion). The lifelong sequence is
        looked up once per request; the selection is one [N, Ll] product and one ``topk``
        for all candidates, ties to the more recent, as in
        :func:`~torchrec_transact.modules.lifelong.select_lifelong` (similarities within
        float rounding of each other may be ordered differently there).

        Args:
            action_types (torch.Tensor): int64 [L], most recent first (all real).
            item_embeddings (torch.Tensor): [L, item_dim].
            candidate_embeddings (torch.Tensor): [N, item_dim].
            lifelong_action_types (Optional[torch.Tensor]): int64 [Ll], eligible actions
                only (leakage out, at most ``lifelong_max_len``), most recent first.
            lifelong_item_embeddings (Optional[torch.Tensor]): [Ll, item_dim].
            impression_item_embeddings (Optional[torch.Tensor]): [Li, item_dim].
            lifelong_candidate_embeddings (Optional[torch.Tensor]): [N, item_dim], the
                candidates in the lifelong vectors' space (a frozen pretrained table);
                None: ``candidate_embeddings``.

        Returns:
            torch.Tensor: float [N, output_dim].
        """
        arch, config = self.arch, self.arch.config
        if config.early_fusion != "concat":
            raise ValueError("serving lifelong and impression sequences is built for concat fusion")
        assert arch.action_embedding is not None and arch.sequence_type_embedding is not None
        types = arch.sequence_type_embedding.weight
        n = candidate_embeddings.shape[0]
        # Action and item parts of each sequence; the per-candidate [N, T, d] tokens are
        # written once, by one cat per dimension.
        actions = [(arch.action_embedding(action_types) + types[0]).expand(n, -1, -1)]
        items = [item_embeddings.expand(n, -1, -1)]
        if lifelong_item_embeddings is not None and lifelong_item_embeddings.shape[0] > 0:
            assert lifelong_action_types is not None
            queries = candidate_embeddings if lifelong_candidate_embeddings is None else lifelong_candidate_embeddings
            chosen = _nearest_recent_first(queries, lifelong_item_embeddings, config.lifelong_select_k)
            actions.append(arch.action_embedding(lifelong_action_types)[chosen] + types[1])
            items.append(lifelong_item_embeddings[chosen])
        if impression_item_embeddings is not None and impression_item_embeddings.shape[0] > 0:
            actions.append(types[2].expand(n, impression_item_embeddings.shape[0], -1))
            items.append(impression_item_embeddings.expand(n, -1, -1))
        length = sum(a.shape[1] for a in actions)
        if length == 0:
            return candidate_embeddings.new_zeros(n, config.output_dim, dtype=torch.float32)
        # Each piece written once into the [N, T, d] tokens, in the encoder's precision.
        action_dim, item_dim = actions[0].shape[-1], candidate_embeddings.shape[-1]
        tokens = candidate_embeddings.new_empty(
            n, length, action_dim + 2 * item_dim, dtype=arch._token_dtype(candidate_embeddings.device.type))
        start = 0
        for action, item in zip(actions, items):
            end = start + action.shape[1]
            tokens[:, start:end, :action_dim] = action
            tokens[:, start:end, action_dim:action_dim + item_dim] = item
            start = end
        tokens[:, :, action_dim + item_dim:] = candidate_embeddings.unsqueeze(1)
        if arch.positional_embedding is not None:  # added in float32 and rounded once, as the arch does
            tokens = (tokens + arch.positional_embedding(torch.arange(length, device=tokens.device))).to(tokens.dtype)
        return arch._compress(arch.encoder(tokens, None, arch._shared_width), None).float()

    @staticmethod
    def _zero_empty(out: torch.Tensor, has_actions: Optional[torch.Tensor]) -> torch.Tensor:
        """A request with no action gets zeros (its max pool holds -inf)."""
        if has_actions is None:
            return out
        return torch.where(has_actions, out, torch.zeros_like(out))


def _nearest_recent_first(candidates: torch.Tensor, items: torch.Tensor, k: int) -> torch.Tensor:
    """int64 [N, min(k, Ll)]: per candidate, the positions of the ``k`` items with the
    highest dot product, ties to the lower position (the more recent), in position order."""
    device_type = candidates.device.type
    off = torch.autocast(device_type, enabled=False) if autocast_dtype(device_type) else nullcontext()
    with off:  # float32 scores
        similarity = candidates.float() @ items.float().t()  # [N, Ll]
    kept = min(k, items.shape[0])
    return top_k_recent_first(similarity, kept).nonzero()[:, 1].view(candidates.shape[0], kept)
