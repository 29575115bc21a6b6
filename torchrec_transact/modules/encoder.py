#!/usr/bin/env python3
"""Transformer encoder layers written on ``scaled_dot_product_attention``.

``nn.TransformerEncoderLayer`` keeps q, k and v in one packed projection and splits it in
``multi_head_attention_forward``; on CPU a third of its backward goes into the copies that
split produces. The layer here keeps the same parameterisation (so weights load one to one,
see :meth:`TransformerEncoderLayer.load_from_torch`) but runs q, k and v as three matmuls on
views of the packed weight and hands boolean masks straight to SDPA.
"""

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from torchrec_transact.modules.dropout import fast_dropout, residual_dropout


@dataclass
class EncoderConfig:
    """Knobs of a :class:`TransformerEncoder`.

    Args:
        d_model (int): token width.
        num_layers (int): number of encoder layers.
        num_heads (int): attention heads; must divide ``d_model``.
        ffn_dim (int): hidden width of the feed-forward block.
        dropout (float): dropout on attention weights, attention output and FFN.
        norm_first (bool): pre-norm instead of the post-norm of the original transformer.
        layer_norm_eps (float): epsilon of the layer norms.
    """

    d_model: int
    num_layers: int = 2
    num_heads: int = 1
    ffn_dim: int = 32
    dropout: float = 0.1
    norm_first: bool = False
    layer_norm_eps: float = 1e-5


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The low precision autocast runs matmuls in on ``device_type``; None when autocast
    is off there (or the device has none, like ``meta``).

    Example::

        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast_dtype("cpu")  # torch.bfloat16
    """
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _attend(
    q: torch.Tensor,
    k_t: torch.Tensor,
    v: torch.Tensor,
    valid: Optional[torch.Tensor],
    num_heads: int,
    dropout_p: float,
) -> torch.Tensor:
    """``dropout(softmax(q k^T + mask)) v`` as two batched matmuls.

    With dropout, SDPA draws a Bernoulli sample per weight and falls back to its math path
    anyway; on CPU its flash kernel is no faster in float32 and 2.4x slower in bfloat16 at
    these sizes (100 tokens, width 96; measured 2026-12-01). The key mask is fused into
    the first product as an additive bias; the softmax runs in float32 for low precision.

    Args:
        q (torch.Tensor): [b * h, n, e] queries (already scaled).
        k_t (torch.Tensor): [b * h, e, n] keys, transposed.
        v (torch.Tensor): [b * h, n, e'] values.
        valid (Optional[torch.Tensor]): bool [b, n], keys that may be attended.
        num_heads (int): h.
        dropout_p (float): dropout on the attention weights (0: none).

    Returns:
        torch.Tensor: [b * h, n, e'].
    """
    if valid is None:
        scores = torch.bmm(q, k_t)
    else:
        bias = torch.zeros(valid.shape[0], 1, valid.shape[1], dtype=q.dtype, device=q.device)
        bias = bias.masked_fill_(~valid[:, None, :], float("-inf"))
        bias = bias.repeat_interleave(num_heads, dim=0) if num_heads > 1 else bias
        scores = torch.baddbmm(bias, q, k_t)
    weights = torch.softmax(scores, -1, dtype=torch.float32).to(v.dtype)
    return torch.bmm(fast_dropout(weights, dropout_p, dropout_p > 0.0), v)


class TransformerEncoderLayer(nn.Module):
    """One transformer encoder layer (self-attention + ReLU FFN, post-norm by default).

    Numerically the same function as ``nn.TransformerEncoderLayer(d_model, nhead,
    dim_feedforward, dropout, batch_first=True)`` given the same weights.

    Args:
        config (EncoderConfig): layer sizes and dropout.
        device (Optional[torch.device]): device of the parameters.

    Example::

        layer = TransformerEncoderLayer(EncoderConfig(d_model=96))
        x = torch.randn(4, 10, 96)
        valid = torch.arange(10)[None, :] < torch.tensor([10, 3, 1, 7])[:, None]
        y = layer(x, valid)  # [4, 10, 96]
    """

    def __init__(
        self, config: EncoderConfig, device: Optional[torch.device] = None
    ) -> None:
        super().__init__()
        d = config.d_model
        if config.num_heads < 1 or not 0.0 <= config.dropout < 1.0:
            raise ValueError(
                f"num_heads={config.num_heads} (>= 1), dropout={config.dropout} (in [0, 1))"
            )
        if d % config.num_heads != 0:
            raise ValueError(
                f"d_model={d} is not divisible by num_heads={config.num_heads}"
            )
        self.num_heads: int = config.num_heads
        self.dropout_p: float = config.dropout
        self.norm_first: bool = config.norm_first
        # Packed like nn.MultiheadAttention's in_proj so weights map one to one.
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d, device=device))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d, device=device))
        self.out_proj = nn.Linear(d, d, device=device)
        self.linear1 = nn.Linear(d, config.ffn_dim, device=device)
        self.linear2 = nn.Linear(config.ffn_dim, d, device=device)
        self.norm1 = nn.LayerNorm(d, eps=config.layer_norm_eps, device=device)
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps, device=device)
        self.layer_norm_eps = config.layer_norm_eps
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.MultiheadAttention's initialisation of the packed projection. Also what
        DistributedModelParallel calls after materialising a model built on meta."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _self_attention(
        self, x: torch.Tensor, valid: Optional[torch.Tensor]
    ) -> torch.Tensor:
        b, n, d = x.shape
        h = self.num_heads
        head_dim = d // h
        # One packed projection; q, k and v are strided views of it that bmm and SDPA
        # read in place (nn.MultiheadAttention instead copies them out, forward and
        # backward). The softmax scale is folded into the (tiny) q weight.
        scale = head_dim**-0.5
        w_q, w_kv = self.in_proj_weight.split([d, 2 * d])
        b_q, b_k, b_v = self.in_proj_bias.split(d)
        out_bias = self.out_proj.bias
        if self.training:
            qkv = F.linear(x, torch.cat([w_q * scale, w_kv]), torch.cat([b_q * scale, b_k, b_v]))
        else:
            # The key bias adds the same q . b_k to every score of a query (softmax ignores
            # it) and the value bias passes through attention unchanged (weights sum to
            # one): only the query bias is added per token, the value bias joins the output
            # projection's. Saves writing a [tokens, 3d] bias before the matmul.
            qkv = torch.matmul(x, torch.cat([w_q * scale, w_kv]).t())
            qkv.narrow(-1, 0, d).add_(b_q * scale)
            out_bias = out_bias + F.linear(b_v, self.out_proj.weight)

        def heads(t: torch.Tensor) -> torch.Tensor:  # [b, n, d] -> [b * h, n, head_dim]
            return t.reshape(b, n, h, head_dim).transpose(1, 2).reshape(b * h, n, head_dim)

        q, k, v = (heads(t) for t in qkv.split(d, dim=-1))
        dropout = self.training and self.dropout_p > 0.0
        if dropout or x.device.type == "cpu":
            # Attention spelled out as two batched matmuls (see _attend).
            out = _attend(q, k.transpose(1, 2), v, valid, h, self.dropout_p if dropout else 0.0)
        else:
            mask = None if valid is None else valid[:, None, None, :]
            out = F.scaled_dot_product_attention(
                q.view(b, h, n, head_dim),
                k.view(b, h, n, head_dim),
                v.view(b, h, n, head_dim),
                attn_mask=mask,
                scale=1.0,
            )
        out = out.view(b, h, n, head_dim).transpose(1, 2).reshape(b, n, d)
        return F.linear(out, self.out_proj.weight, out_bias)

    def _attention_residual(
        self,
        residual: torch.Tensor,
        x: torch.Tensor,
        valid: Optional[torch.Tensor],
        shared_width: int = 0,
    ) -> torch.Tensor:
        """``residual + dropout(self_attention(x))``; with several heads through
        :meth:`_self_attention`, with one head as follows.

        One head with the projections multiplied together (same function, fewer FLOPs).

        The scores ``(W_q x_i + b_q) . (W_k x_j + b_k)`` are ``q'_i . x_j + u . x_j`` with
        ``q'_i = W_k^T W_q x_i`` and ``u = W_k^T b_q``, up to terms equal for every key of
        a query (the softmax cancels them); the output ``W_o (P (W_v x + b_v)) + b_o`` is
        ``P v' + W_o b_v + b_o`` with ``v' = W_o W_v x`` (a row of P sums to one). The
        tokens themselves serve as keys: two [d, d] projections per token instead of four
        (30% of the layer's FLOPs at 100 tokens, width 96), no copy to split q, k and v, no
        bias pass over the projections, and the output accumulates onto the residual in
        place. The folded weights are multiplied in float32 every call (d^3 FLOPs), so
        training updates the original parameters and checkpoints keep
        nn.MultiheadAttention's layout.

        ``shared_width`` > 0 says that the last ``shared_width`` features are the same in
        every token of an example (early fusion's candidate). Their share of a score is
        then equal for every key of a query and cancels too: q' and the keys keep only
        the other features, and in evaluation their share of v' is one vector per example
        added with the output bias (a third fewer FLOPs in the projections and the scores
        at 32 of 96 features).
        """
        if self.num_heads > 1:
            return residual_dropout(residual, self._self_attention(x, valid), self.dropout_p, self.training)
        b, n, d = x.shape
        own = d - shared_width
        device_type = x.device.type
        low_precision = autocast_dtype(device_type)
        dtype = low_precision or x.dtype
        if dtype != torch.float32 and device_type == "cpu":
            # The CPU's low-precision GEMMs copy strided operands (the keys below): the
            # split loses there (0.83x on the layer, bf16) and wins in float32 (1.27x).
            own = d
        with torch.autocast(device_type, enabled=False) if low_precision else nullcontext():
            w_q, w_k, w_v = self.in_proj_weight.split(d)
            b_q, _, b_v = self.in_proj_bias.split(d)
            w_o = self.out_proj.weight
            scale = d**-0.5
            query_weight = torch.mm(w_k[:, :own].t(), w_q) * scale
            value_weight = torch.mm(w_o, w_v)
            key_weight = torch.mv(w_k[:, :own].t(), b_q) * scale
            value_bias = torch.mv(w_o, b_v)
        x = x.to(dtype)
        keys = x[..., :own]
        out_bias = (self.out_proj.bias + value_bias).to(residual.dtype)
        if self.training or own == d:
            q, v = torch.matmul(x, torch.cat([query_weight, value_weight]).to(dtype).t()).split([own, d], dim=-1)
        else:
            q = torch.matmul(x, query_weight.to(dtype).t())
            v = torch.matmul(keys, value_weight[:, :own].to(dtype).t())
            shared = F.linear(x[:, 0, own:], value_weight[:, own:].to(dtype))  # [b, d]
            out_bias = out_bias + shared.to(residual.dtype)[:, None, :]
        key_bias = torch.matmul(keys, key_weight.to(dtype)).unsqueeze(1)
        if valid is not None:
            key_bias = key_bias.masked_fill(~valid[:, None, :], float("-inf"))
        scores = torch.baddbmm(key_bias, q, keys.transpose(1, 2))
        # Low precision: the CPU softmax kernel computes in float32 and rounds once.
        weights = torch.softmax(scores, -1)
        if self.training:
            # Dropped weights no longer sum to one: the value bias goes on every value.
            # (In-place accumulation would cost autograd more than it saves.)
            v = v + value_bias.to(dtype)
            out = torch.baddbmm(self.out_proj.bias.to(dtype), fast_dropout(weights, self.dropout_p, True), v)
            return residual_dropout(residual, out, self.dropout_p, True)
        return (residual + out_bias).baddbmm_(weights.to(residual.dtype), v.to(residual.dtype))

    def _feed_forward_residual(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``residual + dropout(feed_forward(x))``; without dropout the second projection
        accumulates onto the residual in place."""
        if self.training:
            return residual_dropout(residual, self._feed_forward(x), self.dropout_p, True)
        hidden = F.relu(self.linear1(x))
        out = residual + self.linear2.bias.to(residual.dtype)
        # In place through a 2-d view: one GEMM accumulates onto the residual.
        out.flatten(0, -2).addmm_(hidden.flatten(0, -2).to(out.dtype), self.linear2.weight.to(out.dtype).t())
        return out

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = fast_dropout(F.relu(self.linear1(x)), self.dropout_p, self.training)
        return self.linear2(hidden)

    def forward(
        self, x: torch.Tensor, valid: Optional[torch.Tensor] = None, shared_width: int = 0
    ) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): tokens, [B, N, d_model].
            valid (Optional[torch.Tensor]): bool [B, N], True where a token may be
                attended; None when every token is real. Every row needs at least one
                valid token (softmax over nothing is NaN).
            shared_width (int): the last ``shared_width`` features are the same in every
                real token of an example (early fusion's candidate), which a one-head
                post-norm layer exploits; 0: nothing is shared.

        Returns:
            torch.Tensor: [B, N, d_model]. Rows at invalid positions hold values that
            depend only on valid tokens and are meant to be discarded.
        """
        if self.norm_first:
            x = self._attention_residual(x, self.norm1(x), valid)
            return self._feed_forward_residual(x, self.norm2(x))
        x = self.norm1(self._attention_residual(x, x, valid, shared_width))
        return self.norm2(self._feed_forward_residual(x, x))

    @torch.no_grad()
    def load_from_torch(self, layer: nn.TransformerEncoderLayer) -> None:
        """Copies the weights of an ``nn.TransformerEncoderLayer`` of the same sizes.

        The source must compute the same function: ReLU, the same ``norm_first`` and
        layer-norm epsilon."""
        if (
            layer.activation_relu_or_gelu != 1
            or layer.norm_first != self.norm_first
            or layer.norm1.eps != self.layer_norm_eps
        ):
            raise ValueError(
                "the nn.TransformerEncoderLayer differs in activation, norm_first or "
                "layer-norm eps; its weights would compute a different function here"
            )
        self.in_proj_weight.copy_(layer.self_attn.in_proj_weight)
        self.in_proj_bias.copy_(layer.self_attn.in_proj_bias)
        self.out_proj.load_state_dict(layer.self_attn.out_proj.state_dict())
        self.linear1.load_state_dict(layer.linear1.state_dict())
        self.linear2.load_state_dict(layer.linear2.state_dict())
        self.norm1.load_state_dict(layer.norm1.state_dict())
        self.norm2.load_state_dict(layer.norm2.state_dict())


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerEncoderLayer` with no positional encoding.

    Args:
        config (EncoderConfig): sizes of every layer.
        device (Optional[torch.device]): device of the parameters.

    Example::

        encoder = TransformerEncoder(EncoderConfig(d_model=96, num_layers=2))
        x = torch.randn(4, 10, 96)
        valid = torch.ones(4, 10, dtype=torch.bool)
        y = encoder(x, valid)  # [4, 10, 96]
    """

    def __init__(
        self, config: EncoderConfig, device: Optional[torch.device] = None
    ) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(
            [TransformerEncoderLayer(config, device) for _ in range(config.num_layers)]
        )

    def forward(
        self, x: torch.Tensor, valid: Optional[torch.Tensor] = None, shared_width: int = 0
    ) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): tokens, [B, N, d_model].
            valid (Optional[torch.Tensor]): bool [B, N], True for real tokens; None when
                all are real.
            shared_width (int): the last ``shared_width`` features of the input tokens
                are the same in every real token of an example (see
                :meth:`TransformerEncoderLayer.forward`).

        Returns:
            torch.Tensor: [B, N, d_model].
        """
        for i, layer in enumerate(self.layers):
            x = layer(x, valid, shared_width if i == 0 else 0)
        return x

    def load_from_torch(self, encoder: nn.TransformerEncoder) -> None:
        """Copies the weights of an ``nn.TransformerEncoder`` with the same layer sizes."""
        if len(encoder.layers) != len(self.layers):
            raise ValueError(
                f"nn.TransformerEncoder has {len(encoder.layers)} layers, this encoder "
                f"{len(self.layers)}"
            )
        for ours, theirs in zip(self.layers, encoder.layers):
            ours.load_from_torch(theirs)
