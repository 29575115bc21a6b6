"""The SDPA encoder against nn.TransformerEncoder, and the fast dropout."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from torchrec_transact.modules.dropout import fast_dropout
from torchrec_transact.modules.encoder import EncoderConfig, TransformerEncoder


def _pair(d_model: int, heads: int, ffn: int, layers: int, norm_first: bool, dropout: float):
    torch.manual_seed(0)
    theirs = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(
            d_model, heads, ffn, dropout, batch_first=True, norm_first=norm_first
        ),
        layers,
        enable_nested_tensor=False,
    )
    with torch.no_grad():  # nonzero biases: the one-head layer folds them (see _folded_attention)
        for layer in theirs.layers:
            layer.self_attn.in_proj_bias.normal_()
            layer.self_attn.out_proj.bias.normal_()
    ours = TransformerEncoder(
        EncoderConfig(d_model, layers, heads, ffn, dropout, norm_first=norm_first)
    )
    ours.load_from_torch(theirs)
    return ours, theirs


@pytest.mark.parametrize("heads,norm_first", [(1, False), (1, True), (4, False), (2, True)])
@pytest.mark.parametrize("mode", ["eval", "train_no_dropout"])
def test_parity_with_nn_transformer_encoder_forward_and_gradients(
    heads: int, norm_first: bool, mode: str
) -> None:
    dropout = 0.1 if mode == "eval" else 0.0
    ours, theirs = _pair(48, heads, 32, 2, norm_first, dropout)
    if mode == "eval":
        ours.eval(), theirs.eval()
    else:
        ours.train(), theirs.train()
    torch.manual_seed(1)
    x = torch.randn(6, 11, 48)
    lengths = torch.tensor([11, 1, 5, 11, 7, 2])
    valid = torch.arange(11)[None, :] < lengths[:, None]
    x_ours = x.clone().requires_grad_()
    x_theirs = x.clone().requires_grad_()
    # The packed-mask fast path of nn.TransformerEncoder in eval leaves padded rows at 0;
    # compare real tokens only, which is all that is ever read.
    y_ours = ours(x_ours, valid)
    y_theirs = theirs(x_theirs, src_key_padding_mask=~valid)
    assert_close(y_ours[valid], y_theirs[valid], rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(y_ours)
    (y_ours[valid] * weights[valid]).sum().backward()
    (y_theirs[valid] * weights[valid]).sum().backward()
    assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-5)
    for ours_layer, theirs_layer in zip(ours.layers, theirs.layers):
        assert_close(
            ours_layer.in_proj_weight.grad,
            theirs_layer.self_attn.in_proj_weight.grad,
            rtol=1e-4,
            atol=1e-5,
        )
        assert_close(
            ours_layer.in_proj_bias.grad, theirs_layer.self_attn.in_proj_bias.grad, rtol=1e-4, atol=1e-5
        )
        assert_close(
            ours_layer.out_proj.weight.grad, theirs_layer.self_attn.out_proj.weight.grad, rtol=1e-4, atol=1e-5
        )
        assert_close(
            ours_layer.linear1.weight.grad, theirs_layer.linear1.weight.grad, rtol=1e-4, atol=1e-5
        )
        assert_close(
            ours_layer.norm2.weight.grad, theirs_layer.norm2.weight.grad, rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("heads,norm_first", [(1, False), (3, False), (2, True)])
def test_training_attention_path_matches_nn_when_nothing_is_dropped(
    heads: int, norm_first: bool
) -> None:
    """Training with dropout runs its own attention (bias-masked bmm + softmax + fast
    dropout), not SDPA; with p tiny nothing is dropped and it must equal nn's."""
    ours, theirs = _pair(48, heads, 32, 2, norm_first, 1e-9)
    ours.train(), theirs.train()
    x = torch.randn(5, 9, 48)
    valid = torch.arange(9)[None, :] < torch.tensor([9, 1, 4, 9, 6])[:, None]
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours = ours(x_ours, valid)
    y_theirs = theirs(x_theirs, src_key_padding_mask=~valid)
    assert_close(y_ours[valid], y_theirs[valid], rtol=1e-5, atol=1e-5)
    y_ours[valid].sum().backward()
    y_theirs[valid].sum().backward()
    assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-5)


def test_attention_weights_are_dropped_in_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchrec_transact.modules.encoder as encoder_module

    shapes = []

    def recording_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return fast_dropout(x, p, training)

    monkeypatch.setattr(encoder_module, "fast_dropout", recording_dropout)
    ours, _ = _pair(24, 2, 16, 1, False, 0.2)
    ours.train()
    ours(torch.randn(3, 7, 24), torch.ones(3, 7, dtype=torch.bool))
    # [batch * heads, queries, keys]: the attention weights, and the FFN hidden units.
    assert (3 * 2, 7, 7) in shapes and (3, 7, 16) in shapes


def test_load_from_torch_rejects_a_different_function() -> None:
    ours, _ = _pair(24, 1, 16, 1, False, 0.0)
    gelu = nn.TransformerEncoderLayer(24, 1, 16, activation="gelu", batch_first=True)
    with pytest.raises(ValueError, match="differs in activation, norm_first"):
        ours.layers[0].load_from_torch(gelu)
    pre_norm = nn.TransformerEncoderLayer(24, 1, 16, norm_first=True, batch_first=True)
    with pytest.raises(ValueError, match="differs in activation, norm_first"):
        ours.layers[0].load_from_torch(pre_norm)


def test_unmasked_input_equals_all_valid_mask() -> None:
    ours, _ = _pair(24, 1, 16, 2, False, 0.0)
    ours.eval()
    x = torch.randn(3, 7, 24)
    assert_close(ours(x), ours(x, torch.ones(3, 7, dtype=torch.bool)), rtol=1e-6, atol=1e-6)


def test_training_with_dropout_uses_attention_dropout_and_is_seeded() -> None:
    ours, _ = _pair(24, 2, 16, 2, False, 0.3)
    ours.train()
    x = torch.randn(3, 7, 24)
    valid = torch.arange(7)[None, :] < torch.tensor([7, 3, 1])[:, None]
    torch.manual_seed(3)
    a = ours(x, valid)
    torch.manual_seed(3)
    b = ours(x, valid)
    torch.manual_seed(4)
    c = ours(x, valid)
    assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert torch.isfinite(a).all()
    ours.eval()
    assert not torch.allclose(a, ours(x, valid))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_keeps_1_minus_p_and_rescales(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    y = fast_dropout(x, p, training=True)
    kept = y != 0
    # 200k Bernoulli draws: the kept share is within 5 standard deviations of 1 - p.
    std = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * std
    # Each of the four int16 lanes of a random word is a fair coin of its own.
    lane_std = 2 * std
    for lane_rate in kept.view(-1, 4).float().mean(0).tolist():
        assert abs(lane_rate - (1 - p)) < 5 * lane_std
    assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    y.sum().backward()
    assert_close(x.grad, y.detach())  # gradient flows through the same mask and scale
    assert fast_dropout(x, p, training=False) is x


def test_fast_dropout_is_reproducible_and_odd_sizes_work() -> None:
    x = torch.randn(3, 5, 7)  # 105 elements: not a multiple of the 4 lanes per word
    torch.manual_seed(1)
    a = fast_dropout(x, 0.2, True)
    torch.manual_seed(1)
    assert torch.equal(a, fast_dropout(x, 0.2, True))
    assert a.shape == x.shape


def test_bad_head_count_and_dropout_are_rejected() -> None:
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=3"):
        TransformerEncoder(EncoderConfig(d_model=10, num_heads=3))
    with pytest.raises(ValueError, match="num_heads=0"):
        TransformerEncoder(EncoderConfig(d_model=10, num_heads=0))
    with pytest.raises(ValueError, match=r"dropout=1.0 \(in \[0, 1\)\)"):
        TransformerEncoder(EncoderConfig(d_model=10, dropout=1.0))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_shared_candidate_features_give_the_same_function(mode: str) -> None:
    """The first layer's shortcut for features equal in every token of an example (early
    fusion's candidate) computes what the full layer computes, values and gradients, with
    padding whose features differ."""
    ours, _ = _pair(48, 1, 32, 2, False, 0.0)
    ours.train(mode == "train")
    torch.manual_seed(2)
    lengths = torch.tensor([9, 1, 4, 9, 6])
    valid = torch.arange(9)[None, :] < lengths[:, None]
    candidate = torch.randn(5, 1, 16).expand(-1, 9, -1)
    x = torch.cat([torch.randn(5, 9, 32), candidate], dim=-1) * valid[:, :, None]
    x_full, x_shared = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_full = ours(x_full, valid)
    y_shared = ours(x_shared, valid, shared_width=16)
    assert_close(y_shared[valid], y_full[valid], rtol=1e-5, atol=1e-5)
    y_full[valid].sum().backward()
    y_shared[valid].sum().backward()
    assert_close(x_shared.grad, x_full.grad, rtol=1e-4, atol=1e-5)
