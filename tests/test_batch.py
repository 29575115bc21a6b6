"""TransActBatch follows torchrec's Pipelineable contract."""

import torch

from torchrec_transact.data import TransActBatch
from torchrec_transact.data.synthetic import SyntheticActionData, SyntheticBatch, SyntheticConfig


def test_to_moves_every_field_and_keeps_the_subclass() -> None:
    config = SyntheticConfig(num_items=200, num_categories=10, num_users=50, max_seq_len=8)
    batch = SyntheticActionData(config, 20).generate(0)
    moved = batch.to(torch.device("cpu"), non_blocking=True)
    assert isinstance(moved, SyntheticBatch) and isinstance(moved, TransActBatch)
    assert moved.batch_size == 20
    for name in ("dense_features", "labels", "weights", "request_ids", "label_probabilities"):
        assert torch.equal(getattr(moved, name), getattr(batch, name))
    for kjt in ("sparse_features", "sequence_features"):
        assert torch.equal(getattr(moved, kjt).values(), getattr(batch, kjt).values())
        assert torch.equal(getattr(moved, kjt).lengths(), getattr(batch, kjt).lengths())
    assert torch.equal(moved.sequence_features.weights(), batch.sequence_features.weights())
    # A dtype-preserving move to the meta device shows that every tensor is moved.
    meta = batch.to(torch.device("meta"))
    assert meta.labels.device.type == "meta" and meta.label_probabilities.device.type == "meta"
    assert meta.sequence_features.values().device.type == "meta"
