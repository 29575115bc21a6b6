"""Real logs: any log through a JSON event format, the presets (every MovieLens layout,
Taobao, KuaiRand, MIND), validation and early stopping, and serving by raw ids."""

import json
import os

import numpy as np
import pytest
import torch

from helpers import write_file
from torchrec_transact.data.action_logs import load_preset, open_log
from torchrec_transact.data.event_format import EventFormat, preset
from torchrec_transact.data.event_log import read_event_log, read_impression_log
from torchrec_transact.train import main

SMALL = ["--max-seq-len", "10", "--latest-k", "2", "--embedding-dim", "8", "--log-interval", "5"]
RATINGS = [(196, 242, 3.0, 881250949), (186, 302, 4.5, 891717742), (22, 377, 1.0, 878887116), (244, 51, 2.5, 880606923)]


@pytest.mark.parametrize(
    "name,text",
    [
        ("u.data", "".join(f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in RATINGS)),
        ("ml.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         + "".join(f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in RATINGS)),
        ("ratings.dat", "".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in RATINGS)),
        ("ratings.csv", "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r:.1f},{t}\n" for u, i, r, t in RATINGS)),
    ],
)
def test_every_movielens_layout_reads_the_same_ratings(tmp_path, name: str, text: str) -> None:
    log = read_event_log(write_file(tmp_path, name, text), preset("movielens"))
    assert len(log) == 4 and log.vocabularies["user_id"].raw_ids == ["196", "186", "22", "244"]
    assert log.timestamps.tolist() == [881250949.0, 891717742.0, 878887116.0, 880606923.0]
    actions = [preset("movielens").action_names[a] for a in log.action_mask.argmax(1)]
    assert actions == ["neutral", "like", "dislike", "neutral"]  # 3, 4.5, 1, 2.5 stars


def test_a_users_own_format_from_the_command_line(tmp_path) -> None:
    """ISO-8601 times with a zone suffix, an action column, action flags and a category."""
    rows = ["when,who,what,event,liked,category"]
    for k in range(400):
        event = "hide" if k % 5 == 0 else "click"
        rows.append(f"2024-03-0{1 + k // 100}T{(k % 100) // 5:02d}:{k % 60:02d}:00 UTC,u{k % 7},i{k % 23},{event},"
                    f"{int(k % 3 == 0)},c{k % 4}")
    path = write_file(tmp_path, "clicks.csv", "\n".join(rows) + "\n")
    fmt = {
        "name": "clicks", "delimiter": ",", "header": True, "user": "who", "item": "what", "timestamp": "when",
        "timestamp_unit": "iso8601", "action": {"column": "event", "values": {"click": "click", "hide": "hide"}},
        "action_flags": {"liked": "like"}, "tasks": {"click": ["click", "like"], "hide": ["hide"]},
        "categorical": {"candidate_category": "category"},
    }
    format_path = write_file(tmp_path, "clicks.json", json.dumps(fmt))
    log, requests = open_log(EventFormat.from_json(fmt), path, max_seq_len=10)
    assert log.timestamps[0] == 1709251200.0  # 2024-03-01T00:00:00Z
    names = EventFormat.from_json(fmt).action_names
    assert log.action_mask[:, names.index("like")].sum() == 134  # k % 3 == 0: a like on top of the row's action
    assert requests.sparse_features == ["user_id", "candidate_item", "candidate_category"]
    out = str(tmp_path / "run")
    results = main(["--data", "events", "--data-path", path, "--event-format", format_path, "--steps", "4",
                    "--batch-size", "50", "--output-dir", out, *SMALL])
    assert {"auc-click", "auc-hide", "valid-auc-click"} <= set(results["transact"])
    with open(os.path.join(out, "checkpoints", "step_00000004", "vocabulary.json")) as f:
        vocabulary = json.load(f)
    assert vocabulary["features"]["candidate_category"] == ["c0", "c1", "c2", "c3"]
    assert vocabulary["actions"] == ["click", "hide", "like"]


def test_kuairand_official_flags_make_several_actions_per_row(tmp_path) -> None:
    header = "user_id\tvideo_id\ttime_ms\tis_click\tis_like\tis_follow\tis_comment\tis_forward\tis_hate\tlong_view"
    rows = [header, "7\t100\t1649581149287\t1\t1\t0\t0\t0\t0\t1", "7\t101\t1649581150287\t0\t0\t0\t0\t0\t0\t0",
            "7\t102\t1649591150287\t1\t0\t0\t0\t0\t1\t0", "8\t100\t1649581159287\t1\t0\t0\t0\t0\t0\t0"]
    path = write_file(tmp_path, "log.tsv", "\n".join(rows) + "\n")
    log, requests = load_preset("kuairand", path, max_seq_len=10, train_fraction=0.5, valid_fraction=0.0)
    names = preset("kuairand").action_names
    assert [sorted(names[a] for a in np.flatnonzero(m)) for m in log.action_mask] == [
        ["click", "like", "long_view"], [], ["click", "hate"], ["click"]]
    assert log.timestamps[0] == pytest.approx(1649581149.287)
    # User 7's third row is a request of its own; its sequence: three tokens of row 1 (the
    # impression without an action is none), most recent first, all at one time.
    third = int(np.flatnonzero((requests.request_user == 1) & (requests.request_time > 1649590000))[0])
    batch = requests.batch([third])
    sequence = batch.sequence_features
    assert sequence["item_id"].lengths().tolist() == [3]
    assert sorted(names[a] for a in sequence["action_type"].values().tolist()) == ["click", "like", "long_view"]
    assert batch.labels.tolist() == [[0.0, 1.0, 1.0, 0.0]]  # like, hate, click, long_view


def test_event_log_impressions_are_the_users_earlier_rows_without_an_action(tmp_path) -> None:
    """TransAct V2's impressions on an event log: the user's rows without an action before
    the request's session, most recent first; not another user's, not the session's own,
    not later ones."""
    header = "user_id\tvideo_id\ttime_ms\tis_click\tis_like\tis_follow\tis_comment\tis_forward\tis_hate\tlong_view"
    quiet, click = "0\t0\t0\t0\t0\t0\t0", "1\t0\t0\t0\t0\t0\t0"
    rows = [header,
            f"7\t100\t1000000000000\t{quiet}",  # user 7, shown, not engaged: an impression
            f"7\t101\t1000000100000\t{click}",
            f"7\t102\t1000000200000\t{quiet}",  # another impression, more recent
            f"8\t103\t1000000250000\t{quiet}",  # user 8's: never user 7's
            f"7\t104\t1000090000000\t{click}",  # user 7's next session (the request)
            f"7\t105\t1000090001000\t{quiet}",  # in that session: its own candidate
            f"7\t106\t1000190000000\t{quiet}"]  # later session: after the request
    path = write_file(tmp_path, "log.tsv", "\n".join(rows) + "\n")
    log, shown = load_preset("kuairand", path, max_seq_len=10, train_fraction=0.5, valid_fraction=0.0,
                             impression_len=5)
    user7 = int(log.users[0])
    request = int(np.flatnonzero((shown.request_user == user7) & (shown.request_time == 1000090000.0))[0])
    impressions = shown.batch([request]).sequence_features["impression_item_id"]
    n = int(impressions.lengths()[0])
    assert impressions.values()[:n].tolist() == [int(log.items[2]), int(log.items[0])]
    assert impressions.weights()[:n].tolist() == pytest.approx([89800.0, 90000.0])


def test_the_shared_real_logs_load(data_dir: str) -> None:
    log, requests = load_preset("kuairand", os.path.join(data_dir, "kuairand_likehate", "kuairand_27k_likehate.tsv"))
    assert log.format.name == "kuairand_likehate" or len(log) == 0
    names = log.format.action_names
    assert len(log) == 41_828 and log.action_mask[:, names.index("like")].sum() == 33_745
    assert log.action_mask[:, names.index("hate")].sum() == 8_083
    log, _ = load_preset("taobao", os.path.join(data_dir, "taobao_user_behavior", "UserBehavior_814users.csv"))
    assert len(log) == 84_287 and len(log.vocabularies["user_id"]) == 815
    mind = read_impression_log(os.path.join(data_dir, "mind_small_5k", "behaviors.tsv"), preset("mind"))
    assert len(mind) == 5_000 and mind.candidates.size == 189_359 and mind.clicked.sum() == 7_542


def test_mind_requests_are_impression_rows_with_the_history_as_sequence(data_dir: str) -> None:
    path = os.path.join(data_dir, "mind_small_5k", "behaviors.tsv")
    log, requests = load_preset("mind", path, max_seq_len=5)
    with open(path) as f:
        first = f.readline().rstrip("\n").split("\t")
    batch = requests.batch([0])
    shown = first[4].split()
    assert batch.batch_size == len(shown) == int(requests.request_size[0])
    items = log.vocabularies["item"].raw_ids
    assert [items[i - 1] for i in batch.sequence_features["candidate_item_id"].values().tolist()] == [
        s.split("-")[0] for s in shown]
    assert batch.labels[:, 0].tolist() == [float(s.split("-")[1]) for s in shown]
    history = first[3].split()
    lengths = batch.sequence_features["item_id"].lengths()
    sequence = batch.sequence_features["item_id"].values()[: int(lengths[0])].tolist()
    assert [items[i - 1] for i in sequence] == history[::-1][:5]  # most recent first
    ages = batch.sequence_features["item_id"].weights()[:5]
    assert ages.tolist() == [7 * 86400.0 + k for k in range(5)]


def test_validation_drives_early_stopping(tmp_path, data_dir: str) -> None:
    out = str(tmp_path / "run")
    path = os.path.join(data_dir, "kuairand_likehate", "kuairand_27k_likehate.tsv")
    results = main(["--data", "kuairand", "--data-path", path, "--steps", "40", "--batch-size", "200",
                    "--eval-interval", "5", "--early-stopping", "1", "--dense-lr", "0.05", "--output-dir", out, *SMALL])
    metrics = results["transact"]
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    valid = [r for r in rows if r["kind"] == "valid"]
    assert valid and all("auc-like" in r for r in valid)
    losses = [r["loss"] for r in valid]
    best = valid[int(np.argmin(losses))]["step"]
    assert metrics["best_step"] == best and metrics["steps"] <= 40
    # It stopped at the first validation that did not improve on the best one.
    assert metrics["steps"] == 40 or losses[-1] >= min(losses)
    assert metrics["valid-loss"] == pytest.approx(min(losses), rel=1e-4)  # the best weights were restored


def test_a_model_trained_on_a_log_is_served_by_raw_ids(tmp_path, data_dir: str) -> None:
    """Serve evaluation requests by the log's raw ids: the scores of evaluation."""
    from torchrec_transact.serving import Predictor, RawRequest

    path = os.path.join(data_dir, "kuairand_likehate", "kuairand_27k_likehate.tsv")
    out = str(tmp_path / "run")
    main(["--data", "kuairand", "--data-path", path, "--steps", "6", "--batch-size", "200", "--output-dir", out, *SMALL])
    predictor = Predictor.from_checkpoint(out)
    log, requests = load_preset("kuairand", path, max_seq_len=10, max_request_size=10)
    items, users = log.vocabularies["item"].raw_ids, log.vocabularies["user_id"].raw_ids
    names = log.format.action_names
    served = 0
    for request in requests.split("eval")[:40].tolist():
        batch = requests.batch([request])
        with torch.no_grad():
            expected = torch.sigmoid(predictor.model(batch.dense_features, batch.sparse_features, batch.sequence_features))
        history = requests.history(request)
        raw = RawRequest(
            event_times=history.timestamps, event_actions=[names[a] for a in history.action_types],
            event_items=[items[i - 1] for i in history.item_ids], request_time=float(requests.request_time[request]),
            candidates=[items[i - 1] for i in batch.sequence_features["candidate_item_id"].values().tolist()],
            sparse={"user_id": users[int(requests.request_user[request]) - 1]},  # dense: computed as training did
        )
        result = predictor.score_raw(raw)
        torch.testing.assert_close(result.probabilities, expected, atol=1e-5, rtol=1e-4)
        assert result.unknown_ids == 0
        served += 1
    assert served == 40
    # A raw item the log never had takes the shared unknown row and is counted; it never
    # becomes another item.
    unseen = RawRequest([], [], [], 1.7e12, ["no-such-video", items[0]], np.zeros(4), {"user_id": "nobody"})
    result = predictor.score_raw(unseen)
    assert result.unknown_ids == 2 and torch.isfinite(result.probabilities).all()


def test_rare_ids_share_the_unknown_row(data_dir: str) -> None:
    """--min-id-count: ids seen fewer times in the training requests map to row 0, in
    training and at serving alike (the vocabulary shrinks to the kept ids)."""
    path = os.path.join(data_dir, "kuairand_likehate", "kuairand_27k_likehate.tsv")
    full, _ = load_preset("kuairand", path)
    log, requests = load_preset("kuairand", path, min_id_count=3)
    train = requests.split("train")
    rows = requests._order[np.concatenate([np.arange(requests.request_start[r], requests.request_end[r]) for r in train])]
    counts = np.bincount(log.items[rows], minlength=len(log.vocabularies["item"]))
    assert (counts[1:] >= 3).all() and len(log.vocabularies["item"]) < len(full.vocabularies["item"])
    # The same rows, each item either kept under its raw id or sent to row 0.
    kept = log.vocabularies["item"].raw_ids
    raw_full = np.array(full.vocabularies["item"].raw_ids, dtype=object)[full.items - 1]
    raw_kept = np.array(["<unk>"] + kept, dtype=object)[log.items]
    assert ((raw_kept == raw_full) | (log.items == 0)).all() and (log.items == 0).any()
    assert log.vocabularies["item"].lookup([raw_full[log.items == 0][0]])[0] == 0


def test_double_colon_files_read_across_stream_chunks(tmp_path, monkeypatch) -> None:
    """`::` is rewritten as the file streams; a delimiter cut by a chunk is still found."""
    from torchrec_transact.data.text_files import Transcoded

    rows = [(u, 1000 + u % 37, 1 + u % 5, 880000000 + 7 * u) for u in range(1, 400)]
    plain = read_event_log(write_file(tmp_path, "u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)),
                           preset("movielens"))
    for size in (3, 7, 64):  # chunk boundaries at every offset of the `::`
        monkeypatch.setattr(Transcoded, "chunk_size", size)
        log = read_event_log(write_file(tmp_path, f"r{size}.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows)),
                             preset("movielens"))
        assert np.array_equal(log.timestamps, plain.timestamps) and np.array_equal(log.action_mask, plain.action_mask)
        assert log.vocabularies["item"].raw_ids == plain.vocabularies["item"].raw_ids


def test_an_item_is_one_candidate_of_its_request(tmp_path, data_dir: str) -> None:
    """A page view and a purchase of one item in a session: one candidate, positive for buy."""
    path = write_file(tmp_path, "t.csv", "1,7,3,pv,1000\n1,7,3,buy,1100\n1,8,3,pv,1200\n1,9,3,cart,1300\n"
                      "1,10,3,pv,90000\n1,7,3,pv,90100\n")
    log, requests = load_preset("taobao", path, train_fraction=0.5, valid_fraction=0.0)
    batch = requests.batch([0])
    items = log.vocabularies["item"].raw_ids
    candidates = [items[i - 1] for i in batch.sequence_features["candidate_item_id"].values().tolist()]
    assert sorted(candidates) == ["7", "8", "9"] and batch.batch_size == 3
    labels = dict(zip(candidates, batch.labels.tolist()))  # cart, fav, buy
    assert labels["7"] == [0.0, 0.0, 1.0] and labels["9"] == [1.0, 0.0, 0.0] and labels["8"] == [0.0, 0.0, 0.0]
    _, shared = load_preset("taobao", os.path.join(data_dir, "taobao_user_behavior", "UserBehavior_814users.csv"))
    for request in range(0, shared.request_time.size, 97):
        ids = shared.batch([request]).sequence_features["candidate_item_id"].values().tolist()
        assert len(ids) == len(set(ids))


def test_rows_without_an_action_do_not_crowd_out_the_history(tmp_path) -> None:
    """The history window counts tokens: 200 impressions without an action after 60 clicks
    still leave the 50 most recent clicks in the next session's sequence."""
    header = "user_id\tvideo_id\ttime_ms\tis_click\tis_like\tis_follow\tis_comment\tis_forward\tis_hate\tlong_view"
    rows = [header] + [f"1\t{k}\t{1_000_000 + k * 1000}\t1\t0\t0\t0\t0\t0\t0" for k in range(60)]
    rows += [f"1\t{100 + k}\t{1_060_000 + k * 1000}\t0\t0\t0\t0\t0\t0\t0" for k in range(200)]
    rows += ["1\t999\t900000000\t1\t0\t0\t0\t0\t0\t0"]
    log, requests = load_preset("kuairand", write_file(tmp_path, "k.tsv", "\n".join(rows) + "\n"), max_seq_len=50,
                                max_request_size=None, session_gap_s=3600.0)
    last = int(np.argmax(requests.request_time))
    assert requests.batch([last]).sequence_features["item_id"].lengths().tolist() == [50]


def test_a_byte_order_mark_is_not_part_of_a_column_name(tmp_path) -> None:
    fmt = EventFormat.from_json({"name": "bom", "header": True, "user": "user", "item": "item", "timestamp": "ts",
                                 "action": {"column": "event", "values": {"click": "click"}}, "tasks": {"click": ["click"]}})
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffuser,item,ts,event\nu1,i1,5,click\n".encode("utf-8"))
    log = read_event_log(str(path), fmt)
    assert len(log) == 1 and log.vocabularies["user_id"].raw_ids == ["u1"]
