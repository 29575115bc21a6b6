"""Behaviour of the TransAct module: shapes, masks, truncation, padding, errors, tracing."""

import pytest
import torch
from torch.testing import assert_close
from torchrec.distributed.train_pipeline.tracing import Tracer as PipelineTracer

from helpers import kjt_from_examples, make_transact, random_example, small_config
from torchrec_transact import TransAct, TransActConfig


@pytest.mark.parametrize("fusion", ["concat", "append", "none"])
@pytest.mark.parametrize("latest_k,max_pool", [(3, True), (3, False), (0, True), (20, True)])
def test_output_shape_per_fusion(fusion: str, latest_k: int, max_pool: bool) -> None:
    transact = make_transact(early_fusion=fusion, latest_k=latest_k, max_pool=max_pool)
    d_item, d_action = 8, 8
    d_model = d_action + 2 * d_item if fusion == "concat" else d_action + d_item
    assert transact.output_dim == (latest_k + int(max_pool)) * d_model
    g = torch.Generator().manual_seed(1)
    kjt = kjt_from_examples([random_example(g, n) for n in (0, 1, 5, 12, 30)])
    out = transact(kjt)
    assert out.shape == (5, transact.output_dim)
    assert out.dtype == torch.float32
    out.square().sum().backward()
    for name, p in transact.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_empty_history_gives_zeros_except_with_append() -> None:
    g = torch.Generator().manual_seed(2)
    kjt = kjt_from_examples([random_example(g, 0), random_example(g, 4)])
    concat = make_transact(early_fusion="concat").eval()
    out = concat(kjt)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert out[1].abs().sum() > 0
    # With "append" the candidate is a token of its own, so an empty history is not empty.
    append = make_transact(early_fusion="append").eval()
    assert append(kjt)[0].abs().sum() > 0


def test_latest_tokens_beyond_length_are_zero() -> None:
    transact = make_transact(latest_k=5).eval()
    g = torch.Generator().manual_seed(3)
    out = transact(kjt_from_examples([random_example(g, 2), random_example(g, 9)]))
    d = transact.config.d_model
    latest = out[:, : 5 * d].view(2, 5, d)
    assert torch.equal(latest[0, 2:], torch.zeros_like(latest[0, 2:]))
    assert (latest[0, :2].abs().sum(-1) > 0).all()
    assert (latest[1].abs().sum(-1) > 0).all()


def test_actions_past_max_seq_len_never_matter() -> None:
    transact = make_transact(max_seq_len=12).eval()
    g = torch.Generator().manual_seed(4)
    actions, items, ages, candidate = random_example(g, 20)
    base = transact(kjt_from_examples([(actions, items, ages, candidate)]))
    changed_items = items[:12] + [(i + 7) % 50 for i in items[12:]]
    changed_actions = actions[:12] + [(a + 1) % 5 for a in actions[12:]]
    tail_changed = transact(
        kjt_from_examples([(changed_actions, changed_items, ages, candidate)])
    )
    assert_close(tail_changed, base, rtol=0, atol=0)
    truncated = transact(kjt_from_examples([(actions[:12], items[:12], ages[:12], candidate)]))
    assert_close(truncated, base, rtol=1e-6, atol=1e-6)
    # The 12th most recent action is inside the window and does matter.
    inside_changed = transact(
        kjt_from_examples([(actions, items[:11] + [(items[11] + 1) % 50] + items[12:], ages, candidate)])
    )
    assert not torch.allclose(inside_changed, base)


@pytest.mark.parametrize("fusion", ["concat", "append"])
def test_output_of_an_example_does_not_depend_on_the_batch(fusion: str) -> None:
    transact = make_transact(early_fusion=fusion, max_seq_len=40).eval()
    g = torch.Generator().manual_seed(5)
    examples = [random_example(g, n) for n in (40, 3, 0, 17, 1, 29, 8, 40, 2)]
    batched = transact(kjt_from_examples(examples))
    for i, example in enumerate(examples):
        alone = transact(kjt_from_examples([example]))
        assert_close(batched[i : i + 1], alone, rtol=1e-5, atol=1e-5)
    # The number of length buckets changes only the layout, not the result.
    transact.sequence_arch.config.max_length_buckets = 1
    assert_close(transact(kjt_from_examples(examples)), batched, rtol=1e-5, atol=1e-5)


def test_leakage_is_removed_in_training_and_evaluation() -> None:
    g = torch.Generator().manual_seed(6)
    actions, items, ages, candidate = random_example(g, 6)
    clean = kjt_from_examples([(actions, items, ages, candidate)])
    # Future actions (negative age) inserted at the front and in the middle.
    leaky = kjt_from_examples(
        [
            (
                [4, 3] + actions[:3] + [2] + actions[3:],
                [11, 12] + items[:3] + [13] + items[3:],
                [-5.0, -100.0] + ages[:3] + [-1.0] + ages[3:],
                candidate,
            )
        ]
    )
    transact = make_transact(dropout=0.0, time_window_s=3600.0)
    transact.eval()
    assert_close(transact(leaky), transact(clean), rtol=1e-6, atol=1e-6)
    transact.train()
    torch.manual_seed(10)
    train_leaky = transact(leaky)
    torch.manual_seed(10)
    assert_close(train_leaky, transact(clean), rtol=1e-6, atol=1e-6)


def test_leakage_does_not_take_a_slot_of_max_seq_len() -> None:
    transact = make_transact(max_seq_len=4).eval()
    g = torch.Generator().manual_seed(7)
    actions, items, ages, candidate = random_example(g, 4)
    clean = transact(kjt_from_examples([(actions, items, ages, candidate)]))
    leaky = transact(
        kjt_from_examples([([1] + actions, [9] + items, [-30.0] + ages, candidate)])
    )
    assert_close(leaky, clean, rtol=1e-6, atol=1e-6)


def test_time_window_is_training_only() -> None:
    transact = make_transact(time_window_s=86400.0, dropout=0.0)
    g = torch.Generator().manual_seed(8)
    kjt = kjt_from_examples([random_example(g, 10) for _ in range(6)])
    no_window = make_transact(time_window_s=0.0, dropout=0.0)
    no_window.load_state_dict(transact.state_dict())
    transact.eval()
    no_window.eval()
    assert_close(transact(kjt), no_window(kjt), rtol=0, atol=0)
    transact.train()
    torch.manual_seed(0)
    assert not torch.allclose(transact(kjt), no_window(kjt))


def test_time_window_masks_each_example_own_recent_actions_as_if_removed() -> None:
    """Training output == evaluation output of the sequences without the masked actions."""
    window = 7200.0
    transact = make_transact(time_window_s=window, dropout=0.0, max_seq_len=30)
    g = torch.Generator().manual_seed(9)
    examples = [random_example(g, n) for n in (12, 5, 25, 8, 0, 16, 30, 3)]
    transact.train()
    torch.manual_seed(123)
    trained = transact(kjt_from_examples(examples))
    # Same draw: the window of example b is U[0, window) from torch's generator.
    torch.manual_seed(123)
    thresholds = torch.rand(len(examples)) * window
    reduced = []
    kept_counts = []
    for (actions, items, ages, candidate), threshold in zip(examples, thresholds.tolist()):
        keep = [i for i, age in enumerate(ages) if age >= threshold]
        kept_counts.append(len(keep) / max(1, len(ages)))
        reduced.append(
            ([actions[i] for i in keep], [items[i] for i in keep], [ages[i] for i in keep], candidate)
        )
    transact.eval()
    expected = transact(kjt_from_examples(reduced))
    assert_close(trained, expected, rtol=1e-5, atol=1e-5)
    # The windows are drawn per example: the kept fractions differ across examples.
    assert len({round(c, 3) for c in kept_counts if c > 0}) > 2
    assert min(thresholds) < max(thresholds)


def test_training_is_reproducible_with_manual_seed() -> None:
    transact = make_transact(dropout=0.1, time_window_s=3600.0)
    g = torch.Generator().manual_seed(11)
    kjt = kjt_from_examples([random_example(g, n) for n in (9, 4, 12)])
    transact.train()
    torch.manual_seed(5)
    first = transact(kjt)
    torch.manual_seed(5)
    assert_close(transact(kjt), first, rtol=0, atol=0)
    torch.manual_seed(6)
    assert not torch.allclose(transact(kjt), first)


@pytest.mark.parametrize("fusion", ["concat", "append", "none"])
def test_all_masked_rows_are_finite_with_finite_gradients(fusion: str) -> None:
    transact = make_transact(early_fusion=fusion, time_window_s=1e9)
    g = torch.Generator().manual_seed(12)
    examples = [
        random_example(g, 0),
        ([1, 2], [3, 4], [-1.0, -2.0], 5),  # all leakage
        random_example(g, 6),  # inside the (huge) training window
    ]
    kjt = kjt_from_examples(examples)
    for mode in ("train", "eval"):
        getattr(transact, mode)()
        transact.zero_grad()
        out = transact(kjt)
        assert torch.isfinite(out).all()
        if fusion != "append":
            assert torch.equal(out[:2], torch.zeros_like(out[:2]))
        out.sum().backward()
        for name, p in transact.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), (mode, name)
    # A batch in which nothing at all is left still runs backward.
    transact.train()
    out = transact(kjt_from_examples(examples[:2]))
    out.sum().backward()
    assert torch.isfinite(out).all()


def test_frozen_pretrained_item_table_is_unchanged_by_an_optimizer_step() -> None:
    transact = make_transact(time_window_s=0.0)
    pretrained = torch.randn(50, 8)
    transact.load_item_embeddings(pretrained, freeze=True)
    optimizer = torch.optim.Adam(
        [p for p in transact.parameters() if p.requires_grad], lr=0.1
    )
    action_before = transact.sequence_arch.action_embedding.weight.detach().clone()
    g = torch.Generator().manual_seed(13)
    kjt = kjt_from_examples([random_example(g, 6) for _ in range(4)])
    transact(kjt).square().sum().backward()
    optimizer.step()
    table = transact.item_embedding_collection.embeddings["transact_items"].weight
    assert torch.equal(table, pretrained)
    assert not torch.equal(transact.sequence_arch.action_embedding.weight, action_before)
    with pytest.raises(ValueError, match=r"shape \(50, 4\), expected \(50, 8\)"):
        transact.load_item_embeddings(torch.randn(50, 4))


def test_unfrozen_pretrained_table_trains() -> None:
    transact = make_transact(time_window_s=0.0)
    pretrained = torch.randn(50, 8)
    transact.load_item_embeddings(pretrained, freeze=False)
    optimizer = torch.optim.SGD(transact.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(14)
    transact(kjt_from_examples([random_example(g, 6) for _ in range(4)])).square().sum().backward()
    optimizer.step()
    table = transact.item_embedding_collection.embeddings["transact_items"].weight
    assert not torch.equal(table, pretrained)


def test_learned_positional_encoding_makes_order_matter() -> None:
    g = torch.Generator().manual_seed(15)
    actions, items, ages, candidate = random_example(g, 5)
    swapped = ([actions[1], actions[0]] + actions[2:], [items[1], items[0]] + items[2:], ages, candidate)
    plain = make_transact(latest_k=0).eval()  # max pool only: order-free without positions
    assert_close(
        plain(kjt_from_examples([swapped])),
        plain(kjt_from_examples([(actions, items, ages, candidate)])),
        rtol=1e-5,
        atol=1e-5,
    )
    positional = make_transact(latest_k=0, positional_encoding=True).eval()
    assert not torch.allclose(
        positional(kjt_from_examples([swapped])),
        positional(kjt_from_examples([(actions, items, ages, candidate)])),
    )


def test_other_keys_are_ignored() -> None:
    transact = make_transact().eval()
    g = torch.Generator().manual_seed(16)
    kjt = kjt_from_examples([random_example(g, 4), random_example(g, 2)])
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    extra = KeyedJaggedTensor.from_lengths_sync(
        keys=["user_country"] + kjt.keys(),
        values=torch.cat([torch.tensor([1, 2, 3]), kjt.values()]),
        lengths=torch.cat([torch.tensor([2, 1]), kjt.lengths()]),
        weights=torch.cat([torch.zeros(3), kjt.weights()]),
    )
    assert_close(transact(extra), transact(kjt), rtol=0, atol=0)


# ---- errors --------------------------------------------------------------------------


def test_missing_key_is_named() -> None:
    transact = make_transact()
    g = torch.Generator().manual_seed(17)
    kjt = kjt_from_examples([random_example(g, 3)])
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    without_candidate = KeyedJaggedTensor.from_lengths_sync(
        keys=["action_type", "item_id"],
        values=kjt.values()[:6],
        lengths=kjt.lengths()[:2],
        weights=kjt.weights()[:6],
    )
    with pytest.raises(ValueError, match="'candidate_item_id' is missing"):
        transact(without_candidate)


def test_unequal_action_and_item_lengths_name_the_example() -> None:
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["action_type", "item_id", "candidate_item_id"],
        values=torch.tensor([1, 2, 3, 4, 5, 6, 7, 8]),
        lengths=torch.tensor([1, 2, 1, 2, 1, 1]),
        weights=torch.ones(8),
    )
    kjt_bad = KeyedJaggedTensor.from_lengths_sync(
        keys=["action_type", "item_id", "candidate_item_id"],
        values=torch.tensor([1, 2, 3, 4, 5, 6, 7]),
        lengths=torch.tensor([1, 2, 1, 1, 1, 1]),
        weights=torch.ones(7),
    )
    transact = make_transact()
    transact(kjt)
    with pytest.raises(ValueError, match="example 1 has 2 'action_type' values but 1 'item_id'"):
        transact(kjt_bad)


@pytest.mark.parametrize(
    "key,example,value,bound",
    [("action_type", 1, 5, 5), ("item_id", 2, 50, 50), ("candidate_item_id", 0, -1, 50)],
)
def test_out_of_range_ids_name_key_example_and_value(
    key: str, example: int, value: int, bound: int
) -> None:
    examples = [([1, 2], [3, 4], [1.0, 2.0], 5) for _ in range(3)]
    actions, items, ages, candidate = examples[example]
    if key == "action_type":
        examples[example] = ([1, value], items, ages, candidate)
    elif key == "item_id":
        examples[example] = (actions, [value, 4], ages, candidate)
    else:
        examples[example] = (actions, items, ages, value)
    with pytest.raises(
        ValueError, match=rf"'{key}' example {example} has id {value}, expected 0 <= id < {bound}"
    ):
        make_transact()(kjt_from_examples(examples))


def test_candidate_count_and_ages_are_checked() -> None:
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    two_candidates = KeyedJaggedTensor.from_lengths_sync(
        keys=["action_type", "item_id", "candidate_item_id"],
        values=torch.tensor([1, 2, 3, 4]),
        lengths=torch.tensor([1, 1, 2]),
        weights=torch.ones(4),
    )
    with pytest.raises(ValueError, match="example 0 has 2 'candidate_item_id' values, expected exactly 1"):
        make_transact()(two_candidates)
    nan_age = kjt_from_examples([([1], [2], [1.0], 3), ([1, 2], [2, 3], [1.0, float("nan")], 3)])
    with pytest.raises(ValueError, match="example 1 of 'item_id' has a non-finite action age"):
        make_transact()(nan_age)
    unweighted = KeyedJaggedTensor.from_lengths_sync(
        keys=["action_type", "item_id", "candidate_item_id"],
        values=torch.tensor([1, 2, 3]),
        lengths=torch.tensor([1, 1, 1]),
    )
    with pytest.raises(ValueError, match="no weights"):
        make_transact()(unweighted)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="early_fusion='sum'"):
        small_config(early_fusion="sum")
    with pytest.raises(ValueError, match="output would be empty"):
        small_config(latest_k=0, max_pool=False)
    with pytest.raises(ValueError, match="max_seq_len=0"):
        small_config(max_seq_len=0)


# ---- tracing -------------------------------------------------------------------------


def test_pipeline_tracer_sees_the_item_table_fed_by_the_input_kjt() -> None:
    """torchrec's pipeline rewrites models by fx-tracing them with ShardedModule-free
    submodules as leaves; the EmbeddingCollection must receive the input KJT itself."""
    transact = make_transact().eval()
    tracer = PipelineTracer(leaf_modules=["item_embedding_collection", "sequence_arch"])
    graph = tracer.trace(transact)
    calls = {n.target: n for n in graph.nodes if n.op == "call_module"}
    assert set(calls) == {"item_embedding_collection", "sequence_arch"}
    (arg,) = calls["item_embedding_collection"].args
    assert arg.op == "placeholder"
    traced = torch.fx.GraphModule(transact, graph)
    g = torch.Generator().manual_seed(18)
    kjt = kjt_from_examples([random_example(g, n) for n in (4, 0, 7)])
    assert_close(traced(kjt), transact(kjt), rtol=0, atol=0)
    with pytest.raises(ValueError, match="expected 0 <= id < 50"):
        traced(kjt_from_examples([([1], [99], [1.0], 3)]))


def test_transact_is_a_torch_module_with_the_pinned_api() -> None:
    from torchrec_transact import TransActConfig

    config = TransActConfig(
        num_action_types=4,
        num_items=100,
        action_feature="action_type",
        item_feature="item_id",
        candidate_feature="candidate_item_id",
        action_embedding_dim=32,
        item_embedding_dim=32,
        max_seq_len=100,
        latest_k=10,
        max_pool=True,
        num_layers=2,
        num_heads=1,
        ffn_dim=32,
        dropout=0.1,
        early_fusion="concat",
        time_window_s=86400.0,
    )
    transact = TransAct(config)
    assert transact.output_dim == 11 * 96
    assert len(transact.sequence_arch.encoder.layers) == 2


def _materialise_like_dmp(module: torch.nn.Module) -> None:
    """What DistributedModelParallel.init_parameters does to a model built on meta."""

    def init(m: torch.nn.Module) -> None:
        had_meta = False
        for name, param in m._parameters.items():
            if isinstance(param, torch.Tensor) and param.device.type == "meta":
                m._parameters[name] = torch.nn.Parameter(
                    torch.empty_like(param, device="cpu"), requires_grad=param.requires_grad
                )
                had_meta = True
        if had_meta and hasattr(m, "reset_parameters"):
            m.reset_parameters()

    module.apply(init)


@pytest.mark.parametrize("fusion", ["concat", "append"])
def test_a_model_built_on_meta_is_initialised_when_materialised(fusion: str) -> None:
    transact = TransAct(
        small_config(early_fusion=fusion, positional_encoding=True), device=torch.device("meta")
    )
    _materialise_like_dmp(transact)
    for name, param in transact.named_parameters():
        assert param.device.type == "cpu", name
        assert torch.isfinite(param).all() and param.abs().max() < 10, name
    for layer in transact.sequence_arch.encoder.layers:
        assert torch.equal(layer.in_proj_bias, torch.zeros_like(layer.in_proj_bias))
        # xavier_uniform on [3d, d]: std = sqrt(2 / (4 d)), d = 24 here.
        assert 0.5 * (2 / 96) ** 0.5 < layer.in_proj_weight.std() < 1.5 * (2 / 96) ** 0.5
    if fusion == "append":
        arch = transact.sequence_arch
        assert torch.equal(arch.candidate_action, torch.zeros_like(arch.candidate_action))
    g = torch.Generator().manual_seed(19)
    out = transact.eval()(kjt_from_examples([random_example(g, 5), random_example(g, 0)]))
    assert torch.isfinite(out).all()


def test_multi_head_transact_matches_in_train_and_eval() -> None:
    """Two heads through the whole module: training (window off, p = 0) equals eval."""
    transact = make_transact(num_heads=2, dropout=0.0, time_window_s=0.0)
    g = torch.Generator().manual_seed(20)
    kjt = kjt_from_examples([random_example(g, n) for n in (7, 0, 12, 3)])
    trained = transact.train()(kjt)
    assert_close(transact.eval()(kjt), trained, rtol=1e-5, atol=1e-5)


def test_integer_ages_are_accepted() -> None:
    transact = make_transact(time_window_s=100.0).train()
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["action_type", "item_id", "candidate_item_id"],
        values=torch.tensor([1, 2, 3, 4, 5]),
        lengths=torch.tensor([2, 2, 1]),
        weights=torch.tensor([10, 500, 10, 500, 0]),
    )
    assert torch.isfinite(transact(kjt)).all()


def test_a_batch_emptied_by_the_window_still_gives_every_parameter_a_gradient() -> None:
    """DDP (inside DistributedModelParallel) fails a step in which one of its parameters
    gets no gradient; the training window can empty a whole batch (it did on MovieLens)."""
    g = torch.Generator().manual_seed(4)
    examples = [random_example(g, 3), random_example(g, 0)]
    leaked = [(a, i, [-t for t in ages], c) for a, i, ages, c in examples]  # all in the future
    transact = make_transact(positional_encoding=True).train()
    transact(kjt_from_examples(leaked)).sum().backward()
    for name, p in transact.sequence_arch.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p.grad)), name


def test_compiled_encoder_equals_the_eager_path() -> None:
    """torch.compile (inductor, dynamic shapes) on the evaluation path gives the eager
    numbers on buckets with and without padding; a copy runs its own weights; training
    stays eager; a compiler failure warns once and falls back to eager."""
    import copy
    import pickle
    import warnings

    from torchrec_transact.data import random_sequence_features

    torch.manual_seed(0)
    transact = TransAct(TransActConfig(num_action_types=4, num_items=50, time_window_s=0.0, max_length_buckets=3))
    lengths = torch.tensor([30, 1, 7, 0, 12, 30, 3, 25])
    kjt = random_sequence_features(lengths, 4, 50, generator=torch.Generator().manual_seed(0)).kjt()
    with torch.inference_mode():
        eager = transact.eval()(kjt)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        transact.transformer.compile_encoder()
        compiled = transact(kjt)
        again = transact(random_sequence_features(lengths.flip(0), 4, 50).kjt())  # other shapes, same graphs
    assert transact.transformer._compiled is not None and again.shape == eager.shape
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # compiled, not eager
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    restored = pickle.loads(pickle.dumps(transact))  # the compiled function is not pickled
    assert restored.transformer._compiled is not None
    with torch.inference_mode():
        torch.testing.assert_close(restored(kjt), eager, rtol=1e-4, atol=1e-5)
    copied = copy.deepcopy(transact)  # shares the compiled function, runs its own weights
    with torch.no_grad():
        for p in copied.transformer.encoder.parameters():
            p.mul_(0.5)
    with torch.inference_mode():
        compiled_copy = copied(kjt)
        copied.transformer.compile_encoder(False)
        eager_copy = copied(kjt)
    assert_close(compiled_copy, eager_copy, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(compiled_copy, compiled)
    transact.train()
    transact(kjt).sum().backward()  # gradients: the eager path

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    transact.eval().transformer._compiled.compiled = broken
    with torch.inference_mode(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = transact(kjt)
    assert any("using the eager path" in str(w.message) for w in caught)
    assert transact.transformer._compiled.failed
    torch.testing.assert_close(fallback, eager)


def test_bfloat16_weights_without_autocast_follow_the_float32_module() -> None:
    """Inference with the module's weights in bfloat16 (no autocast): the tokens follow
    the weights' dtype, and the output stays within bfloat16 rounding of float32."""
    import copy

    from torchrec_transact.data import random_sequence_features

    torch.manual_seed(0)
    transact = TransAct(TransActConfig(num_action_types=4, num_items=50, time_window_s=0.0)).eval()
    kjt = random_sequence_features(torch.tensor([30, 1, 0, 12]), 4, 50, generator=torch.Generator().manual_seed(0)).kjt()
    with torch.inference_mode():
        full = transact(kjt)
        half = copy.deepcopy(transact).to(torch.bfloat16)(kjt)
        # The arch alone, handed float32 embeddings (as a caller of encode() may).
        arch = copy.deepcopy(transact.transformer).to(torch.bfloat16)
        lengths = torch.tensor([3, 0])
        inputs = (lengths, torch.tensor([5.0, 60.0, 90.0]), torch.tensor([0, 1, 2]), torch.randn(3, 32), torch.randn(2, 32))
        assert_close(arch.encode(*inputs), transact.transformer.encode(*inputs), rtol=0.05, atol=0.1)
    assert half.dtype == torch.float32 and bool(half[2].eq(0).all())
    assert_close(half, full, rtol=0.05, atol=0.1)
    assert float((half - full).abs().mean()) < 0.02
