"""Property-based tests (hypothesis): random, truncated and broken input into the readers,
the sequence encoders, the request-time processor and the predictor. Each property: a
clear exception naming the file or field, or a finite result equal to the result on the
cleaned input.

CI runs the ``ci`` profile (few examples each, set in conftest.py); run many more with
``HYPOTHESIS_PROFILE=thorough make test`` (or pytest tests/test_properties.py).
"""

import math
import os
import tempfile
from typing import List, Tuple

import numpy as np
import pytest
import torch
from hypothesis import assume, given, strategies as st

from helpers import small_config
from torchrec_transact.data.event_format import preset
from torchrec_transact.data.event_log import read_event_log
from torchrec_transact.data.criteo import read_criteo_tsv
from torchrec_transact.data.features import RequestFeatureProcessor, UserEvents
from torchrec_transact.data.kjt import sequence_kjt
from torchrec_transact.modules.baselines import build_sequence_encoder, SEQUENCE_ENCODERS


_FILES = tempfile.TemporaryDirectory(prefix="transact_properties_")  # removed at exit


def _file(content: bytes, suffix: str) -> str:
    handle, path = tempfile.mkstemp(suffix=suffix, dir=_FILES.name)
    with os.fdopen(handle, "wb") as f:
        f.write(content)
    return path


# ------------------------------------------------------------------ readers

hex_hash = st.integers(0, 2**32 - 1).map(lambda v: f"{v:08x}")
count = st.integers(-5, 10**6).map(str) | st.just("")


@st.composite
def criteo_line(draw) -> Tuple[str, str]:
    """(kind, line): a good line, a short one (trailing fields stripped), a blank one, or
    a bad one (one field broken, or the wrong number of fields)."""
    fields = [draw(st.sampled_from(["0", "1"]))] + [draw(count) for _ in range(13)]
    fields += [draw(hex_hash | st.just("")) for _ in range(26)]
    kind = draw(st.sampled_from(["good", "short", "blank", "bad"]))
    if kind == "short":
        fields = fields[: draw(st.integers(14, 39))]
    elif kind == "blank":
        return kind, ""
    elif kind == "bad":
        broken = draw(st.sampled_from(["label", "dense", "hash", "wide", "many", "few"]))
        if broken == "label":
            fields[0] = draw(st.sampled_from(["2", "-1", "x", "0.5", ""]))
        elif broken == "dense":
            fields[draw(st.integers(1, 13))] = draw(st.sampled_from(["1.5", "x", "1e3", "--1"]))
        elif broken == "hash":
            fields[draw(st.integers(14, 39))] = draw(st.sampled_from(["zz", "0x1f", "-1a", "12 3"]))
        elif broken == "wide":
            fields[draw(st.integers(14, 39))] = "1" + "0" * 16
        elif broken == "many":
            fields += ["1"] * draw(st.integers(1, 3))
        else:
            fields = fields[: draw(st.integers(1, 13))]
    return kind, "\t".join(fields)


@given(st.lists(criteo_line(), min_size=0, max_size=12), st.booleans())
def test_criteo_reader_is_exact_on_good_lines_and_names_the_first_bad_one(lines, skip: bool) -> None:
    text = "".join(line + "\n" for _, line in lines)
    path = _file(text.encode(), ".tsv")
    kept = [line for kind, line in lines if kind in ("good", "short")]
    bad = [i for i, (kind, _) in enumerate(lines) if kind == "bad"]
    if (bad and not skip) or not kept:
        with pytest.raises(ValueError, match=os.path.basename(path)) as error:
            read_criteo_tsv([path], table_size=1000, skip_bad_lines=skip)
        if bad and not skip:
            assert f"{path}:{bad[0] + 1}:" in str(error.value)
        return
    with pytest.warns() if skip and len(bad) > 0.1 * (len(bad) + len(kept)) else _nothing():
        arrays = read_criteo_tsv([path], table_size=1000, skip_bad_lines=skip)
    clean = read_criteo_tsv([_file("".join(line + "\n" for line in kept).encode(), ".tsv")], table_size=1000)
    assert np.array_equal(arrays.dense, clean.dense) and np.array_equal(arrays.sparse, clean.sparse)
    assert np.array_equal(arrays.labels, clean.labels) and np.isfinite(arrays.dense).all()
    assert arrays.skipped_lines == len(bad)
    assert arrays.short_lines == sum(kind == "short" for kind, _ in lines)
    assert arrays.blank_lines == sum(kind == "blank" for kind, _ in lines)


@given(st.lists(criteo_line(), min_size=1, max_size=6), st.sampled_from([",", ";", " ", "|"]))
def test_criteo_reader_names_the_file_when_the_delimiter_is_wrong(lines, delimiter: str) -> None:
    kept = [line for kind, line in lines if kind in ("good", "short")]
    assume(kept)
    path = _file("".join(line.replace("\t", delimiter) + "\n" for line in kept).encode(), ".tsv")
    with pytest.raises(ValueError, match=f"{os.path.basename(path)}:1: "):
        read_criteo_tsv([path], table_size=1000)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> bool:
        return False


@given(st.binary(max_size=400))
def test_readers_on_arbitrary_bytes_name_the_file_or_read_finite_rows(content: bytes) -> None:
    for suffix, read in (
        (".tsv", lambda p: read_criteo_tsv([p], table_size=1000)),
        (".inter", lambda p: read_event_log(p, preset("movielens"))),
        (".csv", lambda p: read_event_log(p, preset("taobao"))),
    ):
        path = _file(content, suffix)
        try:
            result = read(path)
        except ValueError as error:
            assert os.path.basename(path) in str(error)
            continue
        assert len(result) > 0
        values = result.dense if hasattr(result, "dense") else result.timestamps
        assert np.isfinite(values).all()


@st.composite
def movielens_rows(draw) -> Tuple[bool, List[Tuple[str, str]]]:
    """(header?, [(kind, row)]): rating rows, some broken, some blank."""
    rows = []
    for _ in range(draw(st.integers(0, 10))):
        user, item = draw(st.integers(1, 30)), draw(st.integers(1, 60))
        rating = draw(st.sampled_from(["1", "2", "3", "4", "5", "4.5"]))
        time_s = draw(st.integers(8 * 10**8, 9 * 10**8))
        kind = draw(st.sampled_from(["good", "good", "blank", "bad"]))
        fields = [str(user), str(item), rating, str(time_s)]
        if kind == "bad":
            broken = draw(st.sampled_from(["rating", "time", "few", "nan"]))
            if broken == "rating":
                fields[2] = draw(st.sampled_from(["0", "6", "x", ""]))
            elif broken == "time":
                fields[3] = draw(st.sampled_from(["", "12:00", "1e400"]))
            elif broken == "nan":
                fields[3] = "nan"
            else:
                fields = fields[: draw(st.integers(1, 3))]
        rows.append((kind, "" if kind == "blank" else "\t".join(fields)))
    return draw(st.booleans()), rows


@given(movielens_rows(), st.booleans())
def test_event_log_reader_keeps_every_data_row_and_counts_the_rest(case, skip: bool) -> None:
    header, rows = case
    lines = (["user_id:token\titem_id:token\trating:float\ttimestamp:float"] if header else []) + [r for _, r in rows]
    path = _file("".join(line + "\n" for line in lines).encode(), ".inter")
    good = [row for kind, row in rows if kind == "good"]
    bad = [i for i, (kind, _) in enumerate(rows) if kind == "bad"]
    if (bad and not skip) or not good:
        with pytest.raises(ValueError, match=os.path.basename(path)):
            read_event_log(path, preset("movielens"), skip_bad_rows=skip)
        return
    with pytest.warns() if skip and len(bad) > 0.1 * (len(bad) + len(good)) else _nothing():
        log = read_event_log(path, preset("movielens"), skip_bad_rows=skip)
    clean = read_event_log(_file("".join(r + "\n" for r in good).encode(), ".inter"), preset("movielens"))
    assert log.report["header_rows"] == header and log.report["skipped_malformed_rows"] == len(bad)
    assert log.report["blank_rows"] == sum(kind == "blank" for kind, _ in rows)
    for name in ("users", "items", "action_mask", "timestamps"):
        assert np.array_equal(getattr(log, name), getattr(clean, name))


# ------------------------------------------------------------------ encoders

ENCODERS = {name: build_sequence_encoder(name, small_config(max_seq_len=6)).eval() for name in SEQUENCE_ENCODERS}
NUM_ACTIONS, NUM_ITEMS = 5, 50  # small_config's vocabularies
age = (
    st.floats(0.0, 1e7)
    | st.floats(-1e7, -1e-3)  # leakage: dropped
    | st.sampled_from([float("nan"), float("inf"), 1e30, 0.0])
)


@st.composite
def jagged_batch(draw):
    lengths = draw(st.lists(st.integers(0, 9), min_size=0, max_size=5))
    total = sum(lengths)
    in_range = draw(st.booleans())
    top = (NUM_ACTIONS, NUM_ITEMS) if in_range else (NUM_ACTIONS + 2, NUM_ITEMS + 3)
    actions = draw(st.lists(st.integers(0, top[0] - 1), min_size=total, max_size=total))
    items = draw(st.lists(st.integers(-1 if not in_range else 0, top[1] - 1), min_size=total, max_size=total))
    ages = draw(st.lists(age, min_size=total, max_size=total))
    candidates = draw(st.lists(st.integers(0, top[1] - 1), min_size=len(lengths), max_size=len(lengths)))
    return lengths, actions, items, ages, candidates


def _kjt(lengths, actions, items, ages, candidates):
    return sequence_kjt(
        torch.tensor(actions, dtype=torch.long), torch.tensor(items, dtype=torch.long),
        torch.tensor(ages, dtype=torch.float32), torch.tensor(lengths, dtype=torch.long),
        torch.tensor(candidates, dtype=torch.long),
    )


@given(jagged_batch(), st.sampled_from(sorted(SEQUENCE_ENCODERS)))
def test_encoders_name_the_bad_field_or_equal_the_cleaned_input(batch, name: str) -> None:
    lengths, actions, items, ages, candidates = batch
    encoder = ENCODERS[name]
    bad_ids = (any(not 0 <= a < NUM_ACTIONS for a in actions) or any(not 0 <= i < NUM_ITEMS for i in items)
               or any(not 0 <= c < NUM_ITEMS for c in candidates))
    ages32 = [float(np.float32(a)) for a in ages]
    bad_ages = any(not math.isfinite(a) for a in ages32)
    with torch.no_grad():
        if (bad_ids or bad_ages) and name != "none":
            with pytest.raises(ValueError, match="'action_type'|'item_id'|'candidate_item_id'"):
                encoder(_kjt(lengths, actions, items, ages, candidates))
            return
        assume(not bad_ids and not bad_ages)
        out = encoder(_kjt(lengths, actions, items, ages, candidates))
        assert out.shape == (len(lengths), encoder.output_dim) and torch.isfinite(out).all()
        # The cleaned input: leakage (negative age) removed by hand.
        keep, start = [], 0
        clean_lengths = []
        for n in lengths:
            kept = [k for k in range(start, start + n) if ages32[k] >= 0]
            keep += kept
            clean_lengths.append(len(kept))
            start += n
        clean = encoder(_kjt(clean_lengths, [actions[k] for k in keep], [items[k] for k in keep],
                             [ages[k] for k in keep], candidates))
    torch.testing.assert_close(out, clean, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ request time

event_time = st.floats(0.0, 2000.0) | st.sampled_from([float("nan"), 1000.0, 1000.0 + 1e-9, 5000.0])


@st.composite
def raw_events(draw):
    """Unsorted events with duplicates, events in the future (after t = 1000) and NaN times."""
    n = draw(st.integers(0, 25))
    times = draw(st.lists(event_time, min_size=n, max_size=n))
    actions = draw(st.lists(st.integers(0, NUM_ACTIONS - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, NUM_ITEMS - 1), min_size=n, max_size=n))
    repeats = draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=5)) if n else []
    return times + [times[r] for r in repeats], actions + [actions[r] for r in repeats], items + [items[r] for r in repeats]


def _cleaned(times, actions, items, request_time):
    """No NaN, nothing at or after the request, one copy of each exact repeat."""
    seen, kept = set(), []
    for t, a, i in zip(times, actions, items):
        if math.isfinite(t) and t < request_time and (t, a, i) not in seen:
            seen.add((t, a, i))
            kept.append((t, a, i))
    return [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]


@given(raw_events())
def test_request_time_processor_equals_the_cleaned_events(events) -> None:
    times, actions, items = events
    processor = RequestFeatureProcessor(max_seq_len=8)
    got = processor.sequence(UserEvents(times, actions, items), request_time=1000.0)
    expected = processor.sequence(UserEvents(*_cleaned(times, actions, items, 1000.0)), request_time=1000.0)
    for a, b in zip(got, expected):
        assert np.array_equal(a, b)
    assert np.isfinite(got[2]).all() and (got[2] > 0).all() and len(got[0]) <= 8


@pytest.fixture(scope="module")
def predictor():
    from test_serving import small_model

    from torchrec_transact.serving import Predictor

    return Predictor(small_model())


@given(events=raw_events(), candidates=st.lists(st.integers(0, NUM_ITEMS - 1), min_size=1, max_size=6))
def test_predictor_scores_equal_the_cleaned_request(predictor, events, candidates) -> None:
    from torchrec_transact.serving import ScoringRequest

    times, actions, items = events
    sparse = {"user_id": 3, "candidate_category": [c % 10 for c in candidates]}
    dense = [0.5, -1.0, 2.0, 0.0, 0.1, 0.2, 0.3]
    raw = predictor.score(ScoringRequest(UserEvents(times, actions, items), 1000.0, candidates, dense, sparse))
    clean = predictor.score(
        ScoringRequest(UserEvents(*_cleaned(times, actions, items, 1000.0)), 1000.0, candidates, dense, sparse)
    )
    assert torch.isfinite(raw.probabilities).all()
    torch.testing.assert_close(raw.probabilities, clean.probabilities)
    nan_or_future = sum(1 for t in times if not math.isfinite(t) or t >= 1000.0)
    assert raw.dropped_events == nan_or_future and clean.dropped_events == 0
