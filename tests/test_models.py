"""TransActDLRM and TransActDCN: shapes with every encoder, loss, learning, errors."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torchmetrics.functional.classification import binary_auroc
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from helpers import kjt_from_examples, random_example, small_config, train_then_score
from torchrec_transact.data import TransActBatch
from torchrec_transact.data.category_match import CategoryMatchTask
from torchrec_transact.data.tasks import PINTEREST_ACTIONS
from torchrec_transact.loss import WeightedMultiTaskLoss
from torchrec_transact.models import TransActDCN, TransActDLRM, TransActTrain
from torchrec_transact.modules.baselines import build_sequence_encoder, SEQUENCE_ENCODERS

TASKS = list(PINTEREST_ACTIONS)


def _ebc(dims=(8, 8)) -> EmbeddingBagCollection:
    return EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=f"t{i}", embedding_dim=d, num_embeddings=20, feature_names=[f"c{i}"]
            )
            for i, d in enumerate(dims)
        ]
    )


def _batch(batch_size: int = 6, dense: int = 5, seed: int = 0) -> TransActBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = [0, 3, 12, 1, 7, 20][:batch_size]
    sequence = kjt_from_examples([random_example(g, n) for n in lengths])
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=["c0", "c1"],
        values=torch.randint(0, 20, (3 * batch_size,), generator=g),
        lengths=torch.tensor([1] * batch_size + [2] * batch_size),
    )
    return TransActBatch(
        dense_features=torch.randn(batch_size, dense, generator=g),
        sparse_features=sparse,
        sequence_features=sequence,
        labels=(torch.rand(batch_size, len(TASKS), generator=g) < 0.4).float(),
        weights=torch.rand(batch_size, generator=g) + 0.5,
        request_ids=torch.arange(batch_size) // 2,
    )


def _model(kind: str, encoder: str, user_dim: int = 0):
    torch.manual_seed(0)
    sequence = build_sequence_encoder(encoder, small_config(time_window_s=600.0))
    if kind == "dlrm":
        return TransActDLRM(_ebc(), sequence, 5, [16, 8], [16], tasks=TASKS)
    return TransActDCN(
        _ebc((8, 4)), sequence, 5, [8], [16], dcn_num_layers=2,
        user_embedding_dim=user_dim, tasks=TASKS,
    )


@pytest.mark.parametrize("encoder", sorted(SEQUENCE_ENCODERS))
@pytest.mark.parametrize("kind", ["dlrm", "dcn"])
def test_forward_backward_every_encoder(kind: str, encoder: str) -> None:
    model = _model(kind, encoder)
    batch = _batch()
    logits = model(batch.dense_features, batch.sparse_features, batch.sequence_features)
    assert logits.shape == (6, 3)
    assert torch.isfinite(logits).all()
    train = TransActTrain(model)
    loss, (loss_value, out_logits, labels) = train(batch)
    loss.backward()
    assert loss_value.requires_grad is False and out_logits.shape == (6, 3)
    assert torch.equal(labels, batch.labels)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if encoder != "none":  # the sequence encoder is trained through the model
        seq_grads = [p.grad for p in model.sequence_encoder.parameters() if p.grad is not None]
        assert any(g.abs().sum() > 0 for g in seq_grads)



SEQUENCE_ONLY = sorted(set(SEQUENCE_ENCODERS) - {"none"})


@pytest.mark.parametrize("encoder", SEQUENCE_ONLY)
def test_every_encoder_trains_under_the_same_time_window(encoder: str) -> None:
    """The window is a training-time mask on the input, shared by every encoder (so an
    encoder comparison changes only the encoder): in training, actions newer than the
    window are gone, exactly as if they had never been logged; evaluation sees them."""
    g = torch.Generator().manual_seed(2)
    # Ages: 0 s for every action but the oldest, which is older than any window draw.
    examples = [
        (a, i, [0.0] * (n - 1) + [1e6], c)
        for n, (a, i, _, c) in ((n, random_example(g, n)) for n in (4, 7, 1))
    ]
    only_oldest = kjt_from_examples([([a[-1]], [i[-1]], [1e6], c) for a, i, _, c in examples])
    torch.manual_seed(0)
    sequence = build_sequence_encoder(encoder, small_config(dropout=0.0, time_window_s=100.0))
    with torch.no_grad():
        train_out = sequence.train()(kjt_from_examples(examples))
        assert_close(train_out, sequence(only_oldest))
        assert not torch.allclose(sequence.eval()(kjt_from_examples(examples)), train_out)


@pytest.mark.parametrize("encoder", SEQUENCE_ONLY)
def test_a_batch_emptied_by_the_window_gives_every_encoder_parameter_a_gradient(encoder: str) -> None:
    """DDP (inside DistributedModelParallel) fails a step in which a parameter gets no
    gradient, and the training window can empty a whole batch."""
    g = torch.Generator().manual_seed(3)
    recent = [(a, i, [1.0] * len(a), c) for a, i, _, c in (random_example(g, n) for n in (3, 5))]
    sequence = build_sequence_encoder(encoder, small_config(time_window_s=1e9)).train()
    sequence(kjt_from_examples(recent)).sum().backward()
    for name, p in sequence.named_parameters():
        assert p.grad is not None, name


def test_dlrm_sequence_tokens_become_interaction_rows() -> None:
    model = _model("dlrm", "transact")
    # 2 categorical features + (latest_k = 3 + max pool) TransAct rows.
    assert model.inter_arch.F == 2 + 4
    assert model.sequence_rows.projection.in_features == small_config().d_model
    no_sequence = _model("dlrm", "none")
    assert no_sequence.inter_arch.F == 2 and no_sequence.sequence_rows is None


def test_dcn_user_embedding_is_a_dense_input() -> None:
    model = _model("dcn", "transact", user_dim=6).eval()
    batch = _batch(dense=5 + 6)
    out = model(batch.dense_features, batch.sparse_features, batch.sequence_features)
    other_user = batch.dense_features.clone()
    other_user[:, 5:] += 1.0
    changed = model(other_user, batch.sparse_features, batch.sequence_features)
    assert out.shape == (6, 3) and not torch.allclose(out, changed)
    expected = 8 + (8 + 4) + model.sequence_encoder.output_dim + 6  # dense, EBC, seq, user
    assert model.crossnet._num_layers == 2 and model.over_arch._mlp[0]._linear.in_features == expected


def test_dcn_low_rank_option() -> None:
    torch.manual_seed(0)
    model = TransActDCN(
        _ebc(), build_sequence_encoder("avg_pool", small_config()), 5, [], [8],
        dcn_low_rank_dim=4, tasks=["click"],
    )
    from torchrec.modules.crossnet import LowRankCrossNet

    assert isinstance(model.crossnet, LowRankCrossNet)
    batch = _batch()
    assert model(batch.dense_features, batch.sparse_features, batch.sequence_features).shape == (6, 1)


def test_mismatched_features_give_clear_errors() -> None:
    model = _model("dcn", "transact")
    batch = _batch()
    renamed = KeyedJaggedTensor.from_lengths_sync(
        keys=["c0", "country"],
        values=batch.sparse_features.values(),
        lengths=batch.sparse_features.lengths(),
    )
    with pytest.raises(ValueError, match=r"TransActDCN: sparse feature\(s\) \['c1'\] of the EmbeddingBagCollection are missing"):
        model(batch.dense_features, renamed, batch.sequence_features)
    with pytest.raises(ValueError, match=r"dense_features have shape \(6, 4\), expected \[B, 5\]"):
        model(batch.dense_features[:, :4], batch.sparse_features, batch.sequence_features)
    dlrm = _model("dlrm", "transact")
    with pytest.raises(ValueError, match=r"TransActDLRM: sparse feature\(s\) \['c1'\]"):
        dlrm(batch.dense_features, renamed, batch.sequence_features)
    with pytest.raises(ValueError, match="TransAct: key 'action_type' is missing from the KJT"):
        dlrm(batch.dense_features, batch.sparse_features, batch.sparse_features)
    with pytest.raises(ValueError, match="bottom MLP ends at 4, the embeddings are 8 wide"):
        TransActDLRM(_ebc(), build_sequence_encoder("none", small_config()), 5, [4], [8])
    with pytest.raises(ValueError, match="unknown sequence encoder 'gpt'"):
        build_sequence_encoder("gpt", small_config())


# ---- loss -----------------------------------------------------------------------------


def test_identity_matrix_and_unit_weights_are_exactly_mean_bce() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 3, generator=g)
    labels = (torch.rand(32, 3, generator=g) < 0.3).float()
    loss = WeightedMultiTaskLoss(torch.eye(3))(logits, labels, torch.ones(32))
    assert torch.equal(loss, F.binary_cross_entropy_with_logits(logits, labels))


def test_weighted_loss_on_a_hand_computed_case() -> None:
    # Two tasks (save, hide); a save counts double on its head, a hide weighs 0.5 on save.
    loss_fn = WeightedMultiTaskLoss([[2.0, 0.5], [0.0, 1.0]], negative_weight=[1.0, 0.25])
    logits = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    labels = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    user_weights = torch.tensor([1.0, 3.0])

    def bce(z: float, y: float) -> float:
        p = 1 / (1 + torch.exp(torch.tensor(-z)))
        return float(-(y * torch.log(p) + (1 - y) * torch.log(1 - p)))

    # Example 0: save head weight 2*1 + 0.5*1 = 2.5 (positive); hide head 0*1 + 1*1 = 1.
    # Example 1: no action: save head gets m0 = 1, hide head m0 = 0.25; user weight 3.
    expected = (
        1.0 * (2.5 * bce(0.0, 1) + 1.0 * bce(1.0, 1))
        + 3.0 * (1.0 * bce(2.0, 0) + 0.25 * bce(-1.0, 0))
    ) / 4
    assert_close(loss_fn(logits, labels, user_weights), torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"label_weight_matrix has shape \(2, 3\)"):
        WeightedMultiTaskLoss(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"negative_weight has shape \(3,\), expected \(2,\)"):
        WeightedMultiTaskLoss(torch.eye(2), negative_weight=[1.0, 1.0, 1.0])
    loss_fn = WeightedMultiTaskLoss(torch.eye(2))
    with pytest.raises(ValueError, match=r"logits have shape \(4, 3\), expected \[B, 2\]"):
        loss_fn(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"labels have shape \(4, 1\)"):
        loss_fn(torch.zeros(4, 2), torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"weights have shape \(3,\), expected \(4,\)"):
        loss_fn(torch.zeros(4, 2), torch.zeros(4, 2), torch.ones(3))


# ---- learning -------------------------------------------------------------------------


def _train_dcn_auc(encoder: str, steps: int = 200, batch_size: int = 128) -> float:
    torch.manual_seed(0)
    task = CategoryMatchTask(num_items=1000, num_categories=20, max_seq_len=20, hide_rate=0.1)
    config = small_config(
        num_action_types=task.num_action_types, num_items=task.num_items, max_seq_len=20,
        action_embedding_dim=16, item_embedding_dim=16, time_window_s=3600.0,
    )
    sequence = build_sequence_encoder(encoder, config)
    if encoder != "none":  # the paper's setting: pretrained item vectors, frozen
        pretrained = task.item_embeddings(16, generator=torch.Generator().manual_seed(1))
        sequence.load_item_embeddings(pretrained, freeze=True)
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name="candidate", embedding_dim=8, num_embeddings=1000,
                               feature_names=["candidate_item"]),
            EmbeddingBagConfig(name="user", embedding_dim=8, num_embeddings=100,
                               feature_names=["user_bucket"]),
        ]
    )
    model = TransActTrain(
        TransActDCN(ebc, sequence, 13, [8], [32], dcn_num_layers=2, tasks=["click"])
    )
    g = torch.Generator().manual_seed(2)
    batches = (task.ranking_batch(batch_size, g) for _ in range(steps))
    logits, labels = train_then_score(
        model, batches, steps, task.ranking_batch(2048, torch.Generator().manual_seed(3))
    )
    return float(binary_auroc(logits[:, 0], labels[:, 0].long()))


def test_dcn_with_transact_beats_dcn_without_sequence() -> None:
    with_transact = _train_dcn_auc("transact")
    without = _train_dcn_auc("none")
    assert with_transact > 0.9, with_transact
    assert without < 0.6, without
    assert with_transact - without > 0.3, (with_transact, without)
