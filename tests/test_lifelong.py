"""TransAct V2's lifelong and impression sequences: selection, leakage, V1 unchanged."""

from typing import List, Optional

import pytest
import torch
from torch.testing import assert_close
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_transact import TransAct, TransActConfig
from torchrec_transact.modules.lifelong import select_lifelong

NUM_ITEMS, NUM_ACTIONS = 40, 4


def _brute_force(lengths, ages, items, candidates, k, max_len) -> List[List[int]]:
    """Per example, in a Python loop: the selected value indices in recency order."""
    selected, start = [], 0
    for b, n in enumerate(lengths.tolist()):
        rows = [start + i for i in range(n) if ages[start + i] >= 0][:max_len]
        # Highest similarity first; equal similarity: the more recent (earlier) first.
        ranked = sorted(rows, key=lambda r: (-float(items[r] @ candidates[b]), r))
        selected.append(sorted(ranked[:k]))
        start += n
    return selected


@pytest.mark.parametrize("seed", range(5))
def test_nearest_selection_equals_a_per_example_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 30, (9,), generator=g)
    lengths[3] = 0
    total = int(lengths.sum())
    ages = torch.randn(total, generator=g) * 100 + 50  # some leakage (negative ages)
    # Few distinct small-integer vectors: many exact ties in similarity.
    items = torch.randint(-2, 3, (total, 4), generator=g).float()
    candidates = torch.randint(-2, 3, (9, 4), generator=g).float()
    for k, max_len in [(1, 100), (4, 100), (5, 7), (40, 100)]:
        kept = select_lifelong(lengths, ages, k, max_len, "nearest", items, candidates)
        expected = _brute_force(lengths, ages, items, candidates, k, max_len)
        got = [kept.index[kept.example == b].tolist() for b in range(9)]
        assert got == expected, (k, max_len)
        assert kept.lengths.tolist() == [len(e) for e in expected]
        for b in range(9):  # positions count from the most recent selected action
            assert kept.position[kept.example == b].tolist() == list(range(len(expected[b])))


@pytest.mark.parametrize("pattern", ["equal", "skewed"])
def test_nearest_selection_equals_the_loop_for_equal_and_skewed_lengths(pattern: str) -> None:
    """Both other layouts of the similarity: a view when every example has the same length,
    a copy of the candidate per action when padding would be mostly empty."""
    g = torch.Generator().manual_seed(7)
    lengths = torch.full((6,), 12) if pattern == "equal" else torch.tensor([60, 1, 0, 2, 1, 3])
    total = int(lengths.sum())
    ages = torch.randn(total, generator=g) * 100 + 50
    items = torch.randint(-2, 3, (total, 4), generator=g).float()
    candidates = torch.randint(-2, 3, (6, 4), generator=g).float()
    kept = select_lifelong(lengths, ages, 3, 100, "nearest", items, candidates)
    expected = _brute_force(lengths, ages, items, candidates, 3, 100)
    assert [kept.index[kept.example == b].tolist() for b in range(6)] == expected


def test_recent_selection_keeps_the_most_recent_non_leakage() -> None:
    lengths = torch.tensor([5, 2])
    ages = torch.tensor([-1.0, 10.0, 20.0, 30.0, 40.0, 5.0, -3.0])
    kept = select_lifelong(lengths, ages, 2, 100, "recent")
    assert kept.index.tolist() == [1, 2, 5]
    with pytest.raises(ValueError, match="needs item_embeddings"):
        select_lifelong(lengths, ages, 2, 100, "nearest")


def _features(
    lengths: List[int], lifelong: List[int], impressions: Optional[List[int]], seed: int = 0,
    lifelong_ages: Optional[torch.Tensor] = None, impression_ages: Optional[torch.Tensor] = None,
) -> KeyedJaggedTensor:
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    n, m = sum(lengths), sum(lifelong)
    keys = ["action_type", "item_id", "candidate_item_id", "lifelong_action_type", "lifelong_item_id"]
    values = [torch.randint(0, NUM_ACTIONS, (n,), generator=g), torch.randint(0, NUM_ITEMS, (n,), generator=g),
              torch.randint(0, NUM_ITEMS, (b,), generator=g), torch.randint(0, NUM_ACTIONS, (m,), generator=g),
              torch.randint(0, NUM_ITEMS, (m,), generator=g)]
    ages = torch.rand(n, generator=g) * 1e4 + 1
    life = lifelong_ages if lifelong_ages is not None else torch.rand(m, generator=g) * 1e7 + 1
    weights = [ages, ages, torch.zeros(b), life, life]
    all_lengths = [lengths, lengths, [1] * b, lifelong, lifelong]
    if impressions is not None:
        k = sum(impressions)
        keys.append("impression_item_id")
        values.append(torch.randint(0, NUM_ITEMS, (k,), generator=g))
        weights.append(impression_ages if impression_ages is not None else torch.rand(k, generator=g) * 1e4 + 1)
        all_lengths.append(impressions)
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.cat(values), lengths=torch.tensor(sum(all_lengths, [])), weights=torch.cat(weights))


def _config(**overrides) -> TransActConfig:
    fields = dict(num_action_types=NUM_ACTIONS, num_items=NUM_ITEMS, max_seq_len=10, latest_k=2, dropout=0.0,
                  time_window_s=0.0)
    fields.update(overrides)
    return TransActConfig(**fields)


def test_v1_is_unchanged_at_the_defaults() -> None:
    """Defaults: no new parameter, the lifelong and impression keys ignored."""
    torch.manual_seed(0)
    v1 = TransAct(_config())
    keys = set(v1.state_dict())
    assert not any("sequence_type" in key for key in keys)
    features = _features([3, 0, 5], [4, 2, 0], [2, 1, 0])
    plain = KeyedJaggedTensor.from_lengths_sync(
        keys=["action_type", "item_id", "candidate_item_id"],
        values=features.values()[:19], lengths=features.lengths()[:9], weights=features.weights()[:19])
    v1.eval()
    assert_close(v1(features), v1(plain))


@pytest.mark.parametrize("selection", ["nearest", "recent"])
def test_lifelong_tokens_join_and_leakage_never_counts(selection: str) -> None:
    """Selected lifelong actions and impressions change the output; a leaked lifelong
    action or impression (age < 0) changes nothing, whatever its item."""
    torch.manual_seed(0)
    config = _config(lifelong_select_k=3, lifelong_selection=selection, impression_item_feature="impression_item_id")
    transact = TransAct(config).eval()
    base = transact(_features([3, 2], [6, 4], [2, 3]))
    assert not torch.allclose(base, transact(_features([3, 2], [0, 0], [0, 0])))  # side tokens count
    leaked_life = torch.rand(10) * 1e6 + 1
    leaked_life[[0, 6]] = -5.0  # the most recent action of each example is leakage
    leaked_shown = torch.rand(5) * 1e3 + 1
    leaked_shown[2] = -1.0
    with_leaks = _features([3, 2], [6, 4], [2, 3], lifelong_ages=leaked_life, impression_ages=leaked_shown)
    out = transact(with_leaks)
    changed = with_leaks.to_dict()
    values = dict((k, v.values().clone()) for k, v in changed.items())
    values["lifelong_item_id"][[0, 6]] = (values["lifelong_item_id"][[0, 6]] + 7) % NUM_ITEMS
    values["impression_item_id"][2] = (values["impression_item_id"][2] + 7) % NUM_ITEMS
    other = KeyedJaggedTensor.from_lengths_sync(
        keys=with_leaks.keys(), values=torch.cat([values[k] for k in with_leaks.keys()]),
        lengths=with_leaks.lengths(), weights=with_leaks.weights())
    assert_close(transact(other), out)


def test_empty_lifelong_and_impressions_give_finite_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    config = _config(lifelong_select_k=4, impression_item_feature="impression_item_id", dropout=0.1,
                     time_window_s=3600.0)
    transact = TransAct(config).train()
    out = transact(_features([0, 2, 0], [0, 0, 0], [0, 0, 0]))
    assert torch.isfinite(out).all() and (out[0] == 0).all() and (out[2] == 0).all()
    out.sum().backward()
    for name, p in transact.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_side_sequences_need_their_keys_and_a_transact_arch() -> None:
    transact = TransAct(_config(lifelong_select_k=2))
    plain = KeyedJaggedTensor.from_lengths_sync(
        keys=["action_type", "item_id", "candidate_item_id"], values=torch.tensor([1, 2, 3]),
        lengths=torch.tensor([1, 1, 1]), weights=torch.ones(3))
    with pytest.raises(ValueError, match="'lifelong_action_type' is missing"):
        transact(plain)
    with pytest.raises(ValueError, match="action_embedding_dim must be > 0"):
        _config(lifelong_select_k=2, action_embedding_dim=0)
    from torchrec_transact.modules.baselines import build_sequence_encoder

    with pytest.raises(ValueError, match="no lifelong or impression sequence"):
        build_sequence_encoder("avg_pool", _config(lifelong_select_k=2))


def test_synthetic_lifelong_history_and_impressions_leave_the_realtime_data_alone() -> None:
    from torchrec_transact.data.synthetic import SyntheticActionData, SyntheticConfig

    plain = SyntheticActionData(SyntheticConfig(num_users=500), 40).generate(2)
    extra = SyntheticActionData(SyntheticConfig(num_users=500, lifelong_len=60, impression_len=8), 40).generate(2)
    kjt = extra.sequence_features
    assert kjt.keys()[3:] == ["lifelong_action_type", "lifelong_item_id", "impression_item_id"]
    assert (kjt["lifelong_item_id"].lengths() == 60).all() and (kjt["impression_item_id"].lengths() == 8).all()
    ages = kjt["lifelong_item_id"].weights().view(40, 60)
    assert (ages[:, 1:] >= ages[:, :-1]).all() and (ages > 14 * 86400).all()  # most recent first, weeks old
    for key in ("action_type", "item_id"):  # the extras draw from their own stream
        assert torch.equal(kjt[key].values(), plain.sequence_features[key].values())
    assert torch.equal(extra.dense_features, plain.dense_features)
    assert not torch.equal(extra.label_probabilities, plain.label_probabilities)


def test_training_with_lifelong_and_impressions(tmp_path) -> None:
    """The command line trains TransAct V2 end to end (DMP, fused tables) on synthetic data
    with lifelong histories and impressions; the flags refuse data without them."""
    from helpers import assert_one_line_exit
    from torchrec_transact.train import main

    small = ["--batch-size", "100", "--max-seq-len", "20", "--latest-k", "3", "--embedding-dim", "8",
             "--eval-batches", "2", "--log-interval", "5", "--eval-interval", "0", "--steps", "10"]
    results = main(small + ["--lifelong-history", "80", "--impression-history", "10", "--lifelong-select-k", "8",
                            "--impressions", "--output-dir", str(tmp_path / "v2")])
    assert 0.0 < results["transact"]["auc-save"] < 1.0
    assert_one_line_exit(lambda: main(small + ["--lifelong-select-k", "8"]), 2, "--lifelong-select-k needs")
    assert_one_line_exit(lambda: main(small + ["--data", "criteo", "--data-path", "x", "--lifelong-history", "5"]), 2,
                         "--lifelong-history: --data criteo has no lifelong history")


def test_next_action_loss_targets_masks_and_gradient() -> None:
    from torchrec_transact.loss import NextActionLoss

    loss_fn = NextActionLoss(positive_tasks=[0, 1])
    items = torch.eye(4) * 5
    labels = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])  # example 2: hide only
    user = items.clone().requires_grad_()  # each user points at its own next item: a low loss
    good = loss_fn(user, items, torch.arange(4), labels)
    bad = loss_fn(items.flip(0), items, torch.arange(4), labels)
    assert float(good) < 0.01 < float(bad)
    good.backward()
    assert user.grad is not None and (user.grad[2] == 0).all()  # not a positive example
    # Same item or same request: not a negative. Rows 0 and 1 share an item, rows 1 and 2 a
    # request: row 0 keeps column 2, row 1 keeps nothing (dropped), row 2 keeps column 0.
    u, e = torch.randn(3, 4), torch.randn(3, 4)
    got = loss_fn(u, e, torch.tensor([1, 1, 2]), torch.ones(3, 3), torch.tensor([0, 1, 1]))
    logits = u @ e.t()
    expected = (torch.logsumexp(logits[0, [0, 2]], 0) - logits[0, 0] + torch.logsumexp(logits[2, [0, 2]], 0)
                - logits[2, 2]) / 2
    assert_close(got, expected)
    # No row with a negative (all of one request): zero, still on the graph.
    alone = torch.randn(2, 4, requires_grad=True)
    zero = loss_fn(alone, torch.randn(2, 4), torch.tensor([1, 2]), torch.ones(2, 3), torch.tensor([5, 5]))
    assert float(zero) == 0.0 and zero.requires_grad
    zero.backward()
    assert (alone.grad == 0).all()


def test_training_logs_the_next_action_loss(tmp_path) -> None:
    """--next-action-loss adds the candidate-free head and logs the term; it falls."""
    import json
    import os

    from torchrec_transact.train import main

    small = ["--batch-size", "100", "--max-seq-len", "20", "--latest-k", "3", "--embedding-dim", "8",
             "--eval-batches", "2", "--log-interval", "10", "--eval-interval", "0", "--steps", "40"]
    main(small + ["--next-action-loss", "0.2", "--output-dir", str(tmp_path / "nal")])
    with open(os.path.join(tmp_path / "nal", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if '"train"' in line]
    terms = [r["next_action_loss"] for r in rows]
    assert len(terms) == 4 and terms[-1] < terms[0]


def test_next_action_user_vector_never_sees_the_candidate() -> None:
    torch.manual_seed(0)
    transact = TransAct(_config(next_action=True)).train()
    features = _features([3, 0, 5], [0, 0, 0], None)
    transact(features)
    user, items = transact.transformer.next_action_inputs()
    assert transact.transformer.next_action_inputs() is None  # read once
    values = features.values().clone()
    values[16:19] = (values[16:19] + 1) % NUM_ITEMS  # other candidates
    other = KeyedJaggedTensor.from_lengths_sync(keys=features.keys(), values=values, lengths=features.lengths(),
                                                weights=features.weights())
    transact(other)
    user_other, items_other = transact.transformer.next_action_inputs()
    assert_close(user_other, user)
    assert not torch.allclose(items_other, items)
    transact.eval()
    transact(features)
    assert transact.transformer.next_action_inputs() is None  # evaluation leaves nothing


def test_session_log_lifelong_sequence_is_the_users_past(data_dir: str) -> None:
    """--lifelong-history on a session log: each request carries the user's events before
    it (most recent first, at most N, ages positive), and its realtime keys are unchanged."""
    import os

    import numpy as np

    from torchrec_transact.data.action_logs import load_preset

    path = os.path.join(data_dir, "taobao_user_behavior", "UserBehavior_814users.csv")
    _, plain = load_preset("taobao", path)
    _, lifelong = load_preset("taobao", path, lifelong_len=50)
    requests = plain.split("eval")[:20].tolist()
    a, b = plain.batch(requests), lifelong.batch(requests)
    for key in ("action_type", "item_id", "candidate_item_id"):
        assert torch.equal(a.sequence_features[key].values(), b.sequence_features[key].values())
    life = b.sequence_features["lifelong_item_id"]
    assert (life.lengths() <= 50).all() and (life.lengths() > 0).any() and (life.weights() > 0).all()
    # Example 0's lifelong sequence: the user's 50 latest events before the request.
    r = requests[0]
    events = lifelong.lifelong_history(r)
    past = events.timestamps < lifelong.request_time[r]
    expected = events.item_ids[past][np.argsort(-events.timestamps[past], kind="stable")][:50]
    n = int(life.lengths()[0])
    assert life.values()[:n].tolist() == expected.tolist()
    ages = life.weights()[:n]
    assert (ages[1:] >= ages[:-1]).all()


def test_frozen_lifelong_table_selects_by_its_vectors_and_takes_no_gradient() -> None:
    """lifelong_frozen_items: the lifelong ids leave the trained table; the model equals a
    shared-table model whose trained item vectors are the frozen (dequantised) ones, and
    in training no gradient reaches the rows only the lifelong sequence uses."""
    torch.manual_seed(0)
    shared = TransAct(_config(lifelong_select_k=3)).eval()
    frozen = TransAct(_config(lifelong_select_k=3, lifelong_frozen_items=True)).eval()
    assert frozen.item_embedding_collection.embedding_configs()[0].feature_names == ["item_id", "candidate_item_id"]
    missing, unexpected = frozen.load_state_dict(shared.state_dict(), strict=False)
    assert missing == ["lifelong_items.embeddings.transact_lifelong_items.weight"] and not unexpected
    weight = frozen.lifelong_items.state_dict()["embeddings.transact_lifelong_items.weight"]
    assert weight.dtype == torch.uint8 and not weight.requires_grad
    vectors = torch.randn(NUM_ITEMS, 32)
    frozen.load_lifelong_items(vectors)
    table = _frozen_vectors(frozen)
    step = (vectors.amax(1) - vectors.amin(1))[:, None] / 255  # row-wise int8: within a step
    assert ((table - vectors).abs() <= step).all()
    with torch.no_grad():  # both trained tables hold the frozen vectors
        shared.item_table.copy_(table)
        frozen.item_table.copy_(table)
    features = _features([3, 2, 0], [9, 4, 5], None)
    assert_close(frozen(features), shared(features))
    # Other frozen vectors select (and encode) other lifelong actions; the trained table
    # still encodes the realtime actions and the candidate.
    frozen.load_lifelong_items(torch.randn(NUM_ITEMS, 32))
    assert not torch.allclose(frozen(features), shared(features))

    frozen.train()
    frozen(features).sum().backward()
    grad = frozen.item_table.grad
    assert all(p is not weight for p in frozen.parameters())
    jts = features.to_dict()
    trained = torch.cat([jts["item_id"].values(), jts["candidate_item_id"].values()]).unique()
    only_lifelong = torch.tensor(sorted(set(jts["lifelong_item_id"].values().tolist()) - set(trained.tolist())))
    assert only_lifelong.numel() > 0 and (grad[only_lifelong] == 0).all()
    assert grad[trained].abs().sum() > 0
    with pytest.raises(ValueError, match="lifelong_select_k > 0"):
        _config(lifelong_frozen_items=True)
    with pytest.raises(ValueError, match="no frozen lifelong table"):
        shared.load_lifelong_items(vectors)


def _frozen_vectors(encoder: TransAct) -> torch.Tensor:
    """Every row of an encoder's frozen lifelong table, dequantised."""
    ids = torch.arange(encoder.config.num_items)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["lifelong_item_id", "candidate_item_id"], values=ids,
                                              lengths=torch.tensor([ids.numel(), 0]))
    return encoder.lifelong_items(kjt)["lifelong_item_id"].values()


def test_training_with_a_frozen_lifelong_table(tmp_path) -> None:
    """--lifelong-items: the data's item vectors or a .pt file, stored int8 in the
    checkpoint; serving loads them with the model; wrong shapes are refused."""
    from helpers import assert_one_line_exit
    from torchrec_transact.serving import Predictor
    from torchrec_transact.train import main

    small = ["--batch-size", "100", "--max-seq-len", "20", "--latest-k", "3", "--embedding-dim", "8",
             "--eval-batches", "2", "--log-interval", "5", "--eval-interval", "0", "--steps", "6",
             "--lifelong-history", "60", "--lifelong-select-k", "4"]
    results = main(small + ["--lifelong-items", "data", "--output-dir", str(tmp_path / "data")])
    assert 0.0 < results["transact"]["auc-save"] < 1.0
    predictor = Predictor.from_checkpoint(str(tmp_path / "data"))
    from torchrec_transact.config import TrainConfig
    from torchrec_transact.trainer import open_run_data

    config = predictor.sequence_config
    expected = open_run_data(TrainConfig(lifelong_history=60)).item_vectors(config.item_embedding_dim)
    step = (expected.amax(1) - expected.amin(1))[:, None] / 255
    assert ((_frozen_vectors(predictor.model.sequence_encoder) - expected).abs() <= step).all()

    vectors = torch.randn(config.num_items, config.item_embedding_dim)
    path = tmp_path / "items.pt"
    torch.save(vectors, path)
    main(small + ["--lifelong-items", str(path), "--output-dir", str(tmp_path / "file")])
    loaded = _frozen_vectors(Predictor.from_checkpoint(str(tmp_path / "file")).model.sequence_encoder)
    assert ((loaded - vectors).abs() <= (vectors.amax(1) - vectors.amin(1))[:, None] / 255).all()
    with open(path, "wb") as f:
        f.write(b"not a tensor file")
    assert_one_line_exit(lambda: main(small + ["--lifelong-items", str(path), "--output-dir", str(tmp_path / "bad")]),
                         2, "--lifelong-items")
    torch.save(vectors[:5], path)
    assert_one_line_exit(lambda: main(small + ["--lifelong-items", str(path), "--output-dir", str(tmp_path / "bad")]),
                         2, "expected a [")
    assert_one_line_exit(lambda: main(small[:-2] + ["--lifelong-items", "data"]), 2, "--lifelong-select-k > 0")


def test_taobao_category_vectors_cluster_items_by_category(data_dir: str) -> None:
    """--lifelong-items category: a log with a category column gives every item a vector
    near its category's centroid (Taobao), covering items the model never trains."""
    import os

    import numpy as np

    from torchrec_transact.config import TrainConfig
    from torchrec_transact.data.action_logs import load_preset
    from torchrec_transact.trainer import open_run_data

    path = os.path.join(data_dir, "taobao_user_behavior", "UserBehavior.csv")
    spec = open_run_data(TrainConfig(data="taobao", data_path=path))
    vectors = spec.category_vectors(16)
    assert vectors.shape == (spec.num_items, 16)

    log, _ = load_preset("taobao", path)
    items, categories = log.items, log.categoricals["candidate_category"]
    first = np.unique(items, return_index=True)[1][:300]
    a, c = torch.from_numpy(items[first]), torch.from_numpy(categories[first])
    distance = torch.cdist(vectors[a], vectors[a])
    same_category = c[:, None] == c[None, :]
    off_diagonal = ~torch.eye(a.numel(), dtype=torch.bool)
    assert (same_category & off_diagonal).any()
    # Centroid plus noise 0.3 per coordinate: pairs within a category are about 0.3 * 2^0.5
    # per coordinate apart, pairs across categories about 1.04 * 2^0.5.
    assert distance[same_category & off_diagonal].mean() < 0.4 * distance[~same_category].mean()
    assert spec.item_vectors is None  # a log has no pretrained vectors of its own
    synthetic = open_run_data(TrainConfig())
    assert synthetic.category_vectors is None and synthetic.item_vectors is not None


def test_mind_impression_sequence_is_the_users_earlier_unclicked_articles(data_dir: str, tmp_path) -> None:
    """--impression-history on MIND: a request's impressions are the articles shown to the
    user in earlier rows and not clicked, most recent first, ages positive; the realtime
    keys are unchanged; a model trains on them end to end."""
    import os

    import numpy as np

    from torchrec_transact.data.action_logs import load_preset
    from torchrec_transact.train import main

    path = os.path.join(data_dir, "mind_small_5k", "behaviors.tsv")
    _, plain = load_preset("mind", path)
    log, shown = load_preset("mind", path, impression_len=20)
    users, counts = np.unique(shown.request_user, return_counts=True)
    repeat = users[counts >= 3]
    assert repeat.size > 0
    rows = np.flatnonzero(shown.request_user == repeat[0])
    rows = rows[np.argsort(shown.request_time[rows], kind="stable")]
    r = int(rows[-1])
    expected, times = [], []
    for q in rows[:-1]:
        if shown.request_time[q] < shown.request_time[r]:
            span = slice(shown._candidate_start[q], shown._candidate_start[q + 1])
            expected.append(log.candidates[span][~log.clicked[span]])
            times.append(np.full(expected[-1].size, shown.request_time[q]))
    items, stamps = np.concatenate(expected), np.concatenate(times)
    expected_items = items[np.argsort(-stamps, kind="stable")][:20]
    assert expected_items.size > 0
    a, b = plain.batch([r]), shown.batch([r])
    for key in ("action_type", "item_id", "candidate_item_id"):
        assert torch.equal(a.sequence_features[key].values(), b.sequence_features[key].values())
    impressions = b.sequence_features["impression_item_id"]
    n = int(impressions.lengths()[0])
    assert impressions.values()[:n].tolist() == expected_items.tolist()
    ages = impressions.weights()[:n]
    assert (ages > 0).all() and (ages[1:] >= ages[:-1]).all()
    assert (impressions.lengths() == n).all()  # the same sequence for every candidate

    results = main(["--data", "mind", "--data-path", path, "--batch-size", "200", "--max-seq-len", "10",
                    "--latest-k", "2", "--embedding-dim", "8", "--steps", "4", "--eval-batches", "2",
                    "--eval-interval", "0", "--impression-history", "20", "--impressions",
                    "--output-dir", str(tmp_path)])
    assert 0.0 < results["transact"]["auc-click"] < 1.0
