"""Serving: user-side dedup, one packed copy, buckets, export, bad requests, checkpoints."""

import dataclasses
import subprocess
import sys
from typing import List, Tuple

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from helpers import small_config
from torchrec_transact.data.features import UserEvents
from torchrec_transact.data.kjt import sequence_kjt
from torchrec_transact.models import TransActDCN, TransActDLRM
from torchrec_transact.modules.baselines import build_sequence_encoder
from torchrec_transact.modules.transact import TransAct
from torchrec_transact.serving import (
    FusedEmbeddingLookup,
    Predictor,
    RequestError,
    RequestTransAct,
    ScoringRequest,
    ServingConfig,
)

FEATURES = [("user_id", 30), ("candidate_item", 50), ("candidate_category", 10)]


def small_model(kind: str = "dcn", encoder: str = "transact", seed: int = 0, **overrides: object) -> torch.nn.Module:
    """A small ranking model whose heads are scaled up so probabilities spread over (0, 1)
    (at initialisation they sit near 0.5, where any comparison is easy to pass)."""
    torch.manual_seed(seed)
    sequence = build_sequence_encoder(encoder, small_config(**overrides))
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name=f"t_{n}", embedding_dim=8, num_embeddings=s, feature_names=[n])
            for n, s in FEATURES
        ]
    )
    tasks = ["click", "save", "hide"]
    if kind == "dcn":
        model = TransActDCN(ebc, sequence, 4, [8], [16], dcn_num_layers=2, user_embedding_dim=3, tasks=tasks)
    else:
        model = TransActDLRM(ebc, sequence, 4, [16, 8], [16], tasks=tasks)
    with torch.no_grad():
        model.heads.linear.weight.mul_(20.0)
    return model.eval()


def assert_spread(probabilities: torch.Tensor) -> None:
    assert float(probabilities.std()) > 0.05, "scores too uniform for the comparison to mean much"


# ----------------------------------------------------------------- the encoder


def _repeated_batch_output(transact: TransAct, actions, items, length, candidates) -> torch.Tensor:
    n = candidates.numel()
    kjt = sequence_kjt(
        actions[:length].repeat(n),
        items[:length].repeat(n),
        torch.ones(n * length),
        torch.full((n,), length),
        candidates,
    )
    return transact(kjt)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # concat, one head
        {"num_heads": 2, "positional_encoding": True},
        {"early_fusion": "append", "positional_encoding": True},
        {"early_fusion": "none"},
        {"action_embedding_dim": 0},
    ],
    ids=["concat", "concat-2heads-positions", "append", "none", "no-action-embedding"],
)
@pytest.mark.parametrize("length,padded", [(9, 9), (4, 9), (2, 2), (0, 3)], ids=["full", "padded", "shorter-than-k", "empty"])
@pytest.mark.parametrize("dedup", [True, False])
def test_request_encoder_equals_the_repeated_batch(overrides, length, padded, dedup) -> None:
    torch.manual_seed(0)
    transact = TransAct(small_config(**overrides)).eval()
    actions, items = torch.randint(0, 5, (padded,)), torch.randint(0, 50, (padded,))
    candidates = torch.randint(0, 50, (6,))
    table = transact.item_embedding_collection.embeddings["transact_items"].weight
    request = RequestTransAct(transact.sequence_arch, dedup)
    with torch.no_grad():
        expected = _repeated_batch_output(transact, actions, items, length, candidates)
        got = request(actions, table[items], table[candidates], torch.tensor(length))
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
        if length == padded and length > 0:  # no length: every position is real
            torch.testing.assert_close(request(actions, table[items], table[candidates]), expected, atol=2e-5, rtol=1e-4)
    assert float(expected.abs().max()) > 0.1 or length == 0


def test_dedup_applies_to_concat_post_norm_only() -> None:
    assert RequestTransAct(TransAct(small_config()).sequence_arch).dedup
    assert not RequestTransAct(TransAct(small_config(early_fusion="append")).sequence_arch).dedup


# ----------------------------------------------------------------- the predictor


def _request(predictor: Predictor, n: int = 7, events: int = 30, seed: int = 0) -> ScoringRequest:
    return predictor.random_request(n, events, seed=seed, request_time=1e6)


@pytest.mark.parametrize("kind", ["dcn", "dlrm"])
@pytest.mark.parametrize("encoder", ["transact", "bst", "vanilla_transformer", "none"])
def test_scores_equal_the_naive_batched_path(kind: str, encoder: str) -> None:
    predictor = Predictor(small_model(kind, encoder))
    assert predictor.scorer is not None
    for n, events in [(7, 30), (1, 5), (4, 0)]:
        request = _request(predictor, n, events, seed=n)
        dedup = predictor.score(request)
        naive = predictor.score_naive(request)
        torch.testing.assert_close(dedup.probabilities, naive.probabilities, atol=1e-5, rtol=1e-4)
        assert dedup.probabilities.shape == (n, 3)
        assert dedup.sequence_length == min(events, 12)
    if encoder != "none":
        assert_spread(predictor.score(_request(predictor, 50, 30)).probabilities)


def test_baseline_encoders_are_served_by_the_model_forward() -> None:
    predictor = Predictor(small_model("dcn", "avg_pool"))
    assert predictor.scorer is None
    request = _request(predictor)
    torch.testing.assert_close(predictor.score(request).probabilities, predictor.score_naive(request).probabilities)
    with pytest.raises(ValueError, match="AveragePooling"):
        predictor.export("unused.pt2")


def test_fused_lookup_equals_the_collection_with_mixed_widths() -> None:
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name="a", embedding_dim=4, num_embeddings=10, feature_names=["f1", "f2"]),
            EmbeddingBagConfig(name="b", embedding_dim=6, num_embeddings=7, feature_names=["f3"]),
            EmbeddingBagConfig(name="c", embedding_dim=4, num_embeddings=5, feature_names=["f4"]),
        ]
    )
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    ids = torch.stack([torch.randint(0, s, (9,)) for s in (10, 10, 7, 5)], dim=1)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f1", "f2", "f3", "f4"], values=ids.t().reshape(-1), lengths=torch.ones(36, dtype=torch.int32)
    )
    expected = ebc(kjt).values().detach()
    lookup = FusedEmbeddingLookup(ebc)
    assert lookup.feature_names == ["f1", "f2", "f3", "f4"]
    assert len(lookup.weights) == 2  # one matrix per width
    torch.testing.assert_close(lookup(ids), expected)
    # The collection's tables became views of the fused matrices and still work.
    torch.testing.assert_close(ebc(kjt).values().detach(), expected)
    assert ebc.embedding_bags["c"].weight.data_ptr() == lookup.weights[0][10:].data_ptr()


@pytest.mark.parametrize(
    "config",
    [
        ServingConfig(pad_to_buckets=True, candidate_buckets=(4, 16)),
        ServingConfig(pad_to_buckets=True, candidate_buckets=(64,), sequence_buckets=(5, 20)),
        ServingConfig(pad_to_buckets=True, candidate_buckets=(8,), sequence_buckets=(13,)),
        ServingConfig(max_candidates_per_batch=8),
    ],
    ids=["bucket-chunks", "sequence-buckets", "one-bucket", "unpadded-chunks"],
)
def test_buckets_and_batches_keep_the_scores(config: ServingConfig) -> None:
    model = small_model("dcn")
    plain = Predictor(model, ServingConfig(max_candidates_per_batch=1000))
    other = Predictor(model, config)
    for n, events in [(37, 30), (3, 2), (1, 0), (16, 8)]:
        request = _request(plain, n, events, seed=n)
        expected = plain.score(request).probabilities
        torch.testing.assert_close(other.score(request).probabilities, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(other.score_naive(request).probabilities, expected, atol=1e-5, rtol=1e-4)


def test_bfloat16_scores_are_close() -> None:
    model = small_model("dcn")
    request = _request(Predictor(model), 40, 30)
    fp32 = Predictor(model).score(request).probabilities
    bf16 = Predictor(model, ServingConfig(bfloat16=True)).score(request).probabilities
    assert bf16.dtype == torch.float32
    assert float((bf16 - fp32).abs().max()) < 0.05


class _HostToDevice(TorchDispatchMode):
    """Records every op that reads a CPU tensor and writes a tensor on the meta device:
    the copies a real accelerator would receive (meta runs shapes only, anywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: List[Tuple[str, List[Tuple[int, ...]]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if any(t.device.type == "cpu" for t in inputs) and any(t.device.type == "meta" for t in outputs):
            self.copies.append((str(func), [tuple(t.shape) for t in inputs]))
        return out


@pytest.mark.parametrize("pad_to_buckets", [False, True])
def test_a_request_is_one_host_to_device_copy(pad_to_buckets: bool) -> None:
    predictor = Predictor(small_model("dcn"), ServingConfig(device="meta", pad_to_buckets=pad_to_buckets))
    prepared = predictor.prepare(_request(predictor, 20, 30))
    with _HostToDevice() as recorder:
        out = predictor.score_prepared(prepared)
    assert out.shape == (20, 3) and out.device.type == "meta"
    assert len(recorder.copies) == 1, recorder.copies
    # The recorder sees per-tensor copies, so the count above means something.
    with _HostToDevice() as recorder:
        [t.to("meta") for t in predictor._host_inputs(prepared, 20, 12)]
    assert len(recorder.copies) == 6


def test_exported_scorer_reloads_without_the_package(tmp_path) -> None:
    predictor = Predictor(small_model("dcn"))
    path = str(tmp_path / "scorer.pt2")
    predictor.export(path)
    cases = []
    for n, events in [(9, 40), (1, 3), (30, 0)]:
        request = _request(predictor, n, events, seed=n)
        prepared = predictor.prepare(request)
        # The exported signature: sequences longer than latest_k, padded, real length given.
        length = max(prepared.item_ids.shape[0], predictor.sequence_config.latest_k + 1)
        cases.append((predictor._host_inputs(prepared, n, length), predictor.score(request).probabilities))
    torch.save(cases, tmp_path / "cases.pt")
    script = (
        "import sys, torch\n"
        f"module = torch.export.load({path!r}).module()\n"
        f"for inputs, expected in torch.load({str(tmp_path / 'cases.pt')!r}):\n"
        "    torch.testing.assert_close(module(*inputs), expected, atol=1e-5, rtol=1e-4)\n"
        "assert 'torchrec_transact' not in sys.modules and 'torchrec' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ----------------------------------------------------------------- bad requests


def test_bad_requests_raise_clear_errors() -> None:
    predictor = Predictor(small_model("dcn"))
    good = _request(predictor, 5, 10)

    def variant(**changes: object) -> ScoringRequest:
        fields = dict(vars(good))
        fields.update(changes)
        return ScoringRequest(**fields)  # type: ignore[arg-type]

    cases = [
        (variant(candidate_ids=[], sparse={**good.sparse, "candidate_item": []}), "no candidates"),
        (variant(candidate_ids=[1, 2, 50, 3, 4]), "candidate 2 has item id 50"),
        (variant(sparse={**good.sparse, "candidate_category": [0, 1, 2, 10, 1]}), "'candidate_category', candidate 3: id 10"),
        (variant(sparse={k: v for k, v in good.sparse.items() if k != "user_id"}), "'user_id' is missing"),
        (variant(dense=np.zeros(6)), "dense has shape"),
        (variant(request_time=float("nan")), "request_time"),
    ]
    for request, message in cases:
        with pytest.raises(RequestError, match=message):
            predictor.score(request)


def test_future_and_unknown_events_are_dropped_and_counted() -> None:
    predictor = Predictor(small_model("dcn"))
    good = _request(predictor, 6, 8)
    events = good.events
    noisy = UserEvents(
        timestamps=np.concatenate([events.timestamps, [good.request_time + 5.0, good.request_time, 10.0, np.nan, 20.0]]),
        action_types=np.concatenate([events.action_types, [1, 1, 99, 1, -1]]),
        item_ids=np.concatenate([events.item_ids, [3, 3, 4, 5, 6]]),
    )
    result = predictor.score(ScoringRequest(noisy, good.request_time, good.candidate_ids, good.dense, good.sparse))
    assert result.dropped_events == 5
    torch.testing.assert_close(result.probabilities, predictor.score(good).probabilities)


def test_non_finite_dense_values_become_zero() -> None:
    predictor = Predictor(small_model("dcn"))
    good = _request(predictor, 4, 8)
    dense = np.tile(np.asarray(good.dense, dtype=np.float32), (4, 1))
    broken = dense.copy()
    broken[1, 2], broken[3, 0] = np.nan, np.inf
    repaired = dense.copy()
    repaired[1, 2], repaired[3, 0] = 0.0, 0.0
    result = predictor.score(ScoringRequest(good.events, good.request_time, good.candidate_ids, broken, good.sparse))
    assert result.repaired_dense == 2
    assert bool(torch.isfinite(result.probabilities).all())
    expected = predictor.score(ScoringRequest(good.events, good.request_time, good.candidate_ids, repaired, good.sparse))
    torch.testing.assert_close(result.probabilities, expected.probabilities)


def test_a_user_without_events_gets_finite_scores() -> None:
    predictor = Predictor(small_model("dlrm"))
    request = _request(predictor, 5, 0)
    result = predictor.score(request)
    assert result.sequence_length == 0 and bool(torch.isfinite(result.probabilities).all())
    torch.testing.assert_close(result["save"], predictor.score_naive(request)["save"])


# ----------------------------------------------------------------- checkpoints


def test_predictor_loads_a_training_checkpoint(tmp_path) -> None:
    from torchrec_transact.models import TransActTrain
    from torchrec_transact.config import parse_args
    from torchrec_transact.train import main
    from torchrec_transact.trainer import open_run_data

    args = ["--steps", "6", "--batch-size", "50", "--eval-batches", "2", "--eval-interval", "0",
            "--output-dir", str(tmp_path), "--embedding-dim", "8"]
    logged = main(args)["transact"]
    predictor = Predictor.from_checkpoint(str(tmp_path))
    # The unsharded model reproduces the run's own (sharded) evaluation loss.
    spec = open_run_data(parse_args(args)[0])
    train_model = TransActTrain(predictor.model)
    with torch.no_grad():
        losses = [float(train_model(batch)[0]) for batch in spec.evaluation(0, 1)]
    assert abs(np.mean(losses) - logged["loss"]) < 1e-5
    request = predictor.random_request(10, 60, seed=1)
    torch.testing.assert_close(predictor.score(request).probabilities, predictor.score_naive(request).probabilities, atol=1e-5, rtol=1e-4)


def test_serving_does_not_import_training() -> None:
    script = (
        "import sys, importlib, pkgutil\n"
        "import torchrec_transact.serving as serving\n"
        "from torchrec_transact.serving import Predictor\n"
        "importlib.import_module(Predictor.from_checkpoint.__module__)\n"
        "for info in pkgutil.walk_packages(serving.__path__, 'torchrec_transact.serving.'):\n"
        "    importlib.import_module(info.name)\n"
        "loaded = [m for m in ('torchrec_transact.train', 'torchrec_transact.trainer') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CUDA graphs)")
def test_cuda_graph_buckets_match_eager() -> None:
    model = small_model("dcn")
    eager = Predictor(model)
    graphs = Predictor(small_model("dcn"), ServingConfig(device="cuda", candidate_buckets=(8, 32)))
    for n in (3, 8, 20, 50):
        request = _request(eager, n, 30, seed=n)
        torch.testing.assert_close(graphs.score(request).probabilities, eager.score(request).probabilities, atol=1e-4, rtol=1e-3)
    assert set(graphs._graphs) == {(8, 12), (32, 12)}


def test_adaptive_threads_score_the_same() -> None:
    model = small_model("dcn")
    threads = torch.get_num_threads()
    try:
        adaptive = Predictor(model, ServingConfig(adaptive_threads=True))
        adaptive.threads.interval_s = 0.0  # measure at every request
        request = _request(adaptive, 12, 30)
        expected = Predictor(model).score(request).probabilities
        for _ in range(3):
            torch.testing.assert_close(adaptive.score(request).probabilities, expected)
        assert 1 <= torch.get_num_threads() <= adaptive.threads.max_threads
    finally:
        torch.set_num_threads(threads)


def test_compiled_request_encoder_scores_the_same() -> None:
    """ServingConfig(compile=True): torch.compile'd request encoder, the eager numbers on
    requests of different sizes (dynamic shapes); in bfloat16 as close to float32 as the
    eager bfloat16 path is required to be (test_bfloat16_scores_are_close)."""
    model = small_model("dcn")
    eager = Predictor(model)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for bfloat16 in (False, True):
        compiled = Predictor(model, ServingConfig(bfloat16=bfloat16, compile=True))
        for n, events in [(9, 40), (30, 12), (1, 3)]:
            request = _request(eager, n, events, seed=n)
            expected, got = eager.score(request).probabilities, compiled.score(request).probabilities
            if bfloat16:
                assert float((got - expected).abs().max()) < 0.05
            else:
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        assert not compiled.scorer._compiled.failed
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # compiled, not eager


def test_int8_item_table_is_within_half_a_step_of_float() -> None:
    from torchrec_transact.modules.quantized import Int8RowwiseTable

    torch.manual_seed(0)
    weight = torch.randn(50, 32) * torch.rand(50, 1) * 3 + torch.randn(50, 1) * 10
    weight[7] = 0.25  # a constant row
    weight[8] = 3.0003 + torch.rand(32) * 1.6e-3  # narrow, far from zero: float16 offset rounding
    table = Int8RowwiseTable(weight)
    assert table.codes.dtype == torch.uint8 and table.nbytes == 50 * (32 + 4)
    assert float(table.scale[7]) == 1.0 and (table.codes[7] == 0).all()
    step = table.scale.float()[:, None]
    # Half a quantisation step, plus float32 rounding of the dequantisation.
    assert ((table.dequantize() - weight).abs() <= step * 0.5 + 1e-6 * (weight.abs() + 1)).all()
    torch.testing.assert_close(table(torch.tensor([[3, 7], [7, 49]])), table.dequantize()[torch.tensor([[3, 7], [7, 49]])])


def test_int8_item_vectors_score_within_tolerance_and_export(tmp_path) -> None:
    """ServingConfig(int8_items=True): scores within 0.005 of float32 on the test model,
    and the exported scorer carries the int8 table."""
    model = small_model("dcn")
    fp32, int8 = Predictor(model), Predictor(model, ServingConfig(int8_items=True))
    for n, events in [(20, 40), (3, 5)]:
        request = _request(fp32, n, events, seed=n)
        diff = (int8.score(request).probabilities - fp32.score(request).probabilities).abs().max()
        assert 0 < float(diff) < 0.005, float(diff)
    rows, dim = model.sequence_encoder.item_table.shape
    assert int8.scorer.int8_items.nbytes == rows * (dim + 4)  # against rows * dim * 4 bytes
    path = str(tmp_path / "int8.pt2")
    int8.export(path)
    prepared = int8.prepare(_request(int8, 9, 40, seed=9))
    inputs = int8._host_inputs(prepared, 9, prepared.item_ids.shape[0])
    torch.testing.assert_close(torch.export.load(path).module()(*inputs), int8.score_prepared(prepared))


@pytest.mark.parametrize("impressions,frozen", [(False, False), (True, False), (False, True)])
def test_lifelong_serving_equals_the_model_forward(impressions: bool, frozen: bool) -> None:
    """TransAct V2 served per request (the lifelong sequence looked up once, the nearest
    actions selected per candidate, by the frozen table's vectors when there is one)
    equals the model's forward on the repeated batch; leaked, unknown and future events
    are dropped and counted."""
    from torchrec_transact.data.features import UserEvents

    overrides = dict(lifelong_select_k=4, lifelong_max_len=30, lifelong_frozen_items=frozen)
    if impressions:
        overrides["impression_item_feature"] = "impression_item_id"
    model = small_model("dcn", **overrides)
    if frozen:
        config = model.sequence_encoder.config
        model.sequence_encoder.load_lifelong_items(torch.randn(config.num_items, config.item_embedding_dim))
    predictor = Predictor(model)
    rng = np.random.default_rng(0)
    request = _request(predictor, 12, 20)
    t = float(request.request_time)
    num_items = predictor.sequence_config.num_items
    stamps = t - rng.uniform(1e5, 1e7, 60)
    stamps[:3] = t + 10.0  # after the request: leakage
    items = rng.integers(0, num_items, 60)
    items[5] = num_items + 3  # unknown
    request.lifelong = UserEvents(stamps, rng.integers(0, 3, 60), items)
    if impressions:
        request.impressions = UserEvents(t - rng.uniform(1, 1e4, 7), np.zeros(7, dtype=np.int64),
                                         rng.integers(0, num_items, 7))
    served, naive = predictor.score(request), predictor.score_naive(request)
    torch.testing.assert_close(served.probabilities, naive.probabilities, rtol=1e-4, atol=1e-5)
    assert_spread(served.probabilities)
    assert served.dropped_events == naive.dropped_events >= 4
    prepared = predictor.prepare(request)
    assert prepared.lifelong_item_ids.shape[0] == 30  # the 30 most recent eligible
    # The side sequences count: the same model without them scores differently.
    bare = dataclasses.replace(request, lifelong=None, impressions=None)
    assert not torch.allclose(served.probabilities, predictor.score(bare).probabilities)
    # No realtime action (the scorer gets one padded position): still the model's forward,
    # with and without the side sequences.
    for empty in (dataclasses.replace(request, events=_request(predictor, 12, 0).events),
                  dataclasses.replace(bare, events=_request(predictor, 12, 0).events)):
        torch.testing.assert_close(predictor.score(empty).probabilities, predictor.score_naive(empty).probabilities,
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not built yet"):
        predictor.export("unused.pt2")
