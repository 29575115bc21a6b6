"""Event logs (MovieLens, Taobao, generic) and the request-time feature processor."""

import os

import numpy as np
import pytest
import torch

from torchrec_transact.data.action_logs import load_preset, SessionRequests
from torchrec_transact.data.event_format import EventFormat, preset
from torchrec_transact.data.event_log import read_event_log
from torchrec_transact.data.features import RequestFeatureProcessor, UserEvents


def test_processor_drops_future_and_duplicates_sorts_and_truncates() -> None:
    events = UserEvents(
        timestamps=[10.0, 40.0, 30.0, 40.0, 50.0, 20.0, 40.0],
        action_types=[0, 1, 2, 1, 0, 1, 2],
        item_ids=[1, 2, 3, 2, 5, 6, 7],
    )
    actions, items, ages = RequestFeatureProcessor(max_seq_len=3).sequence(events, 45.0)
    # 50 is after the request; (40, 1, 2) is logged twice; two events share t=40.
    assert items.tolist() == [2, 7, 3] and actions.tolist() == [1, 2, 2]
    assert ages.tolist() == [5.0, 5.0, 15.0]
    actions, items, ages = RequestFeatureProcessor(max_seq_len=10).sequence(events, 40.0)
    assert items.tolist() == [3, 6, 1]  # an event at the request time is not yet known
    kjt = RequestFeatureProcessor(max_seq_len=2)([(events, 45.0, [8, 9]), (events, 0.0, [4])])
    assert kjt["item_id"].lengths().tolist() == [2, 2, 0]
    assert kjt["candidate_item_id"].values().tolist() == [8, 9, 4]
    assert kjt["item_id"].weights().tolist() == [5.0, 5.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="3 timestamps, 2 action types"):
        UserEvents(timestamps=[1.0, 2.0, 3.0], action_types=[0, 1], item_ids=[1, 2, 3])


def _movielens(data_dir: str, **kwargs):
    return load_preset("movielens", os.path.join(data_dir, "movielens_100k", "ml-100k.inter"), **kwargs)


def test_movielens_round_trip(data_dir: str) -> None:
    log, requests = _movielens(data_dir, max_seq_len=20, max_request_size=10)
    assert len(log) == 100_000
    # Row 0 of each table is the out-of-vocabulary row.
    assert len(log.vocabularies["user_id"]) == 944 and len(log.vocabularies["item"]) == 1683
    assert requests.tasks == ["save", "hide"]
    batch = next(requests.batches("train", batch_size=64))
    b = batch.batch_size
    assert batch.dense_features.shape == (b, 4) and batch.labels.shape == (b, 2)
    assert batch.sequence_features.keys() == ["action_type", "item_id", "candidate_item_id"]
    assert batch.sparse_features.keys() == ["user_id", "candidate_item"]
    assert torch.equal(
        batch.sparse_features["candidate_item"].values(),
        batch.sequence_features["candidate_item_id"].values(),
    )
    # like = save, dislike = hide; never both.
    assert ((batch.labels[:, 0] * batch.labels[:, 1]) == 0).all()
    lengths = batch.sequence_features["item_id"].lengths()
    assert lengths.max() <= 20 and (lengths > 0).any()


def test_movielens_has_no_leakage(data_dir: str) -> None:
    """Every example's sequence is exactly the user's events strictly before its request,
    recomputed here from the raw log, and never includes the example's own event."""
    log, requests = _movielens(data_dir, max_seq_len=15, max_request_size=5)
    by_user = {}
    for u, i, a, t in zip(log.users, log.items, log.action_mask.argmax(1), log.timestamps):
        by_user.setdefault(int(u), []).append((float(t), int(a), int(i)))
    rng = np.random.default_rng(0)
    chosen = rng.choice(requests.split("eval"), 40, replace=False).tolist()
    chosen += rng.choice(requests.split("train"), 40, replace=False).tolist()
    batch = requests.batch(chosen)
    seq = batch.sequence_features
    offsets = np.concatenate([[0], np.cumsum(seq["item_id"].lengths().numpy())])
    candidates = seq["candidate_item_id"].values().numpy()
    example = 0
    for request in chosen:
        user, start = int(requests.request_user[request]), float(requests.request_time[request])
        events = sorted({e for e in by_user[user] if e[0] < start}, key=lambda e: (-e[0], e[1], e[2]))[:15]
        size = int(requests.request_size[request])
        own = log.timestamps[requests._order[requests.request_start[request]:requests.request_end[request]]]
        assert (own >= start).all()
        for _ in range(size):
            lo, hi = offsets[example], offsets[example + 1]
            items = seq["item_id"].values()[lo:hi].tolist()
            ages = seq["item_id"].weights()[lo:hi]
            assert items == [e[2] for e in events]
            assert (ages > 0).all()  # strictly before the request, so before its own event
            assert np.allclose(start - ages.double().numpy(), [e[0] for e in events])
            assert candidates[example] in log.items[requests._order[requests.request_start[request]:requests.request_end[request]]]
            example += 1
    assert example == batch.batch_size


def test_time_split_and_rank_sharding(data_dir: str) -> None:
    _, requests = _movielens(data_dir, max_seq_len=10, max_request_size=10)
    train, valid, evaluation = requests.split("train"), requests.split("valid"), requests.split("eval")
    times = requests.request_time
    assert times[train].max() < requests.time_cut <= times[valid].min()
    assert times[valid].max() < requests.valid_cut <= times[evaluation].min()
    assert len(train) + len(valid) + len(evaluation) == len(times) and len(valid) > 0
    seen = []
    for rank in range(2):
        ids = set()
        for batch in requests.batches("train", 256, shuffle=True, seed=3, rank=rank, world_size=2):
            ids.update(batch.request_ids.tolist())
            # A request is never split across batches.
            assert len(set(batch.request_ids.tolist())) * 1 <= batch.batch_size
        seen.append(ids)
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(train.tolist())


def test_taobao_round_trip(data_dir: str) -> None:
    path = os.path.join(data_dir, "taobao_user_behavior", "UserBehavior.csv")
    log, requests = load_preset("taobao", path, max_seq_len=50)
    assert len(log) == 4321 and len(log.vocabularies["user_id"]) == 44
    batch = next(requests.batches("train", 128))
    assert batch.sparse_features.keys() == ["user_id", "candidate_item", "candidate_category"]
    assert batch.labels.shape[1] == 3  # cart, fav, buy
    assert len(log.vocabularies["candidate_category"]) > 10


def test_bad_rows_name_the_line_or_are_counted(tmp_path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("1,10,100,pv,1000\n1,11,100,look,1001\n2,12,101,buy\n2,13,101,cart,yesterday\n2,14,102,fav,1005\n")
    with pytest.raises(ValueError, match=r"log.csv:2: taobao row: action value not one of"):
        read_event_log(str(path), preset("taobao"))
    log = read_event_log(str(path), preset("taobao"), skip_bad_rows=True)
    assert len(log) == 2 and log.report["skipped_malformed_rows"] == 3
    ml = tmp_path / "ml.inter"
    ml.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t100\n1\t3\t9\t101\n")
    with pytest.raises(ValueError, match=r"ml.inter:3: movielens row: action value not one of"):
        read_event_log(str(ml), preset("movielens"))
    with pytest.raises(ValueError, match="unknown event-log preset 'netflix'"):
        load_preset("netflix", str(ml))


def test_generic_event_log_with_named_columns(tmp_path) -> None:
    path = tmp_path / "clicks.tsv"
    rows = ["ts\tuser\titem\tevent"] + [
        f"{1000 + 10 * k}\tu{k % 3}\ti{k % 7}\t{'click' if k % 4 else 'hide'}" for k in range(30)
    ]
    path.write_text("\n".join(rows) + "\n")
    fmt = EventFormat.from_json({
        "name": "clicks", "delimiter": "\t", "header": True, "user": "user", "item": "item",
        "timestamp": "ts", "action": {"column": "event", "values": {"click": "click", "hide": "hide"}},
        "tasks": {"click": ["click"], "hide": ["hide"]},
    })
    log = read_event_log(str(path), fmt)
    requests = SessionRequests(log, max_seq_len=5, session_gap_s=25.0, train_fraction=0.5, valid_fraction=0.0)
    batches = list(requests.batches("train", 4)) + list(requests.batches("eval", 4))
    assert sum(b.batch_size for b in batches) == 30
    assert all(torch.equal(b.labels.sum(1), torch.ones(b.batch_size)) for b in batches)
