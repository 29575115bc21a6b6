#!/usr/bin/env python3
"""The predictor: a trained model serving one request at a time.

It checks the request (:mod:`~torchrec_transact.serving.request`), scores it in batches of
at most ``max_candidates_per_batch`` candidates, each padded to a bucket on CUDA (one
CUDA graph per bucket, :mod:`~torchrec_transact.serving.cuda_graphs`) and copied to the
device in one packed copy (:mod:`~torchrec_transact.serving.packing`), with the request
scorer (:mod:`~torchrec_transact.serving.scorer`); models whose sequence encoder has no
request scorer take the model's own forward on the repeated batch (the naive path, also
the reference for tests).
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from torchrec_transact.data.action_logs import dense_features, DENSE_FEATURES
from torchrec_transact.data.features import RequestFeatureProcessor
from torchrec_transact.data.kjt import (
    categorical_kjt, repeat_per_candidate, sequence_kjt, SideSequenceValues, with_side_sequences,
)
from torchrec_transact.models.factory import load_trained_model
from torchrec_transact.models.protocol import RankingModel
from torchrec_transact.serving.cuda_graphs import CapturedBucket
from torchrec_transact.serving.export import export_scorer
from torchrec_transact.serving.packing import to_device
from torchrec_transact.serving.raw_ids import RawIdTranslator, RawRequest
from torchrec_transact.serving.request import (
    PreparedRequest,
    RequestError,
    RequestSchema,
    ScoringRequest,
    ScoringResult,
)
from torchrec_transact.serving.scorer import RequestScorer, supports_request_scoring
from torchrec_transact.threads import ThreadBudget


@dataclass
class ServingConfig:
    """How a :class:`Predictor` runs.

    Args:
        device (str): "cpu" or "cuda" (or "cuda:1").
        bfloat16 (bool): run under bfloat16 autocast.
        dedup (bool): share the user's part of the first encoder layer.
        pad_to_buckets (Optional[bool]): pad the candidates and the sequence up to the
            next bucket (None: on CUDA only, where each bucket is a CUDA graph).
        cuda_graphs (bool): on CUDA, capture each bucket once and replay it.
        candidate_buckets (Tuple[int, ...]): candidate counts a batch is padded to.
        sequence_buckets (Tuple[int, ...]): sequence lengths; () means the model's
            ``max_seq_len`` only.
        max_candidates_per_batch (Optional[int]): larger requests are scored in batches
            of this many candidates (each one host-to-device copy); None: 128 on CPU,
            where a [128 * L, d] activation stays in cache and in the allocator's heap
            (1,000 candidates at once ran about 1.5x slower, on either path), and the
            largest bucket on CUDA. With buckets, at most the largest bucket.
        int8_items (bool): keep the item vectors as row-wise int8 (TransAct V2's storage;
            3.6x smaller than float32; scores within 0.005 on the models measured in
            docs/serving.md).
        compile (bool): run the request encoder through ``torch.compile`` (the eager path
            without CUDA graphs; the first requests of each new shape pay the compilation).
        adaptive_threads (bool): on CPU, set the intra-op threads before each request to
            the cores other processes leave free (:class:`~torchrec_transact.threads.ThreadBudget`).
    """

    device: str = "cpu"
    bfloat16: bool = False
    dedup: bool = True
    pad_to_buckets: Optional[bool] = None
    cuda_graphs: bool = True
    candidate_buckets: Tuple[int, ...] = (1, 16, 64, 256, 1024)
    sequence_buckets: Tuple[int, ...] = ()
    max_candidates_per_batch: Optional[int] = None
    int8_items: bool = False
    compile: bool = False
    adaptive_threads: bool = False


class Predictor:
    """A trained model in evaluation mode, scoring one request at a time.

    Args:
        model (RankingModel): a ``TransActDCN`` or ``TransActDLRM``, unsharded.
        config (ServingConfig): device, precision, buckets.
        vocabulary (Optional[Dict[str, Any]]): the parsed ``vocabulary.json`` of a model
            trained on a log: :meth:`score_raw` then takes raw ids.

    ``Predictor.from_checkpoint("outputs/main")`` loads what ``transact-train`` saved. The
    model's categorical tables become views of the fused lookup's matrices (one copy of the
    weights, frozen): serve a copy of a model you still train.

    Example::

        from torchrec_transact.data.features import UserEvents

        ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=100, feature_names=["user_id"]),
        ])
        transact = TransAct(TransActConfig(num_action_types=3, num_items=50, latest_k=2))
        model = TransActDCN(ebc, transact, 2, [8], [16], tasks=["click", "save"])
        predictor = Predictor(model)
        request = ScoringRequest(
            events=UserEvents(  # raw events, any order; the one at 130 s is in the future
                timestamps=[100.0, 40.0, 90.0, 130.0], action_types=[1, 0, 2, 1],
                item_ids=[7, 8, 9, 10],
            ),
            request_time=120.0,
            candidate_ids=[17, 42, 7],
            dense=[0.5, -1.0],            # one row shared by the candidates, or [3, 2]
            sparse={"user_id": 5},        # one id per request, or one per candidate
        )
        result = predictor.score(request)
        result["save"]            # tensor of 3 probabilities
        result.dropped_events     # 1
    """

    def __init__(
        self, model: RankingModel, config: Optional[ServingConfig] = None, vocabulary: Optional[Dict[str, Any]] = None
    ) -> None:
        self.config = config or ServingConfig()
        self.side_sequences: bool = model.sequence_encoder.config.side_sequences  # TransAct V2
        if self.side_sequences and (
            self.config.pad_to_buckets or self.config.compile or torch.device(self.config.device).type != "cpu"
        ):
            raise ValueError(
                "a model with lifelong or impression sequences (TransAct V2) is served on the CPU, without "
                "bucket padding or compile, for now"
            )
        self.raw_ids: Optional[RawIdTranslator] = (
            RawIdTranslator(vocabulary["features"], vocabulary["actions"], vocabulary.get("min_id_count", 1) > 1)
            if vocabulary
            else None
        )
        self.device = torch.device(self.config.device)
        self.threads: Optional[ThreadBudget] = (
            ThreadBudget() if self.config.adaptive_threads and self.device.type == "cpu" else None
        )
        self.model = model.eval().to(self.device)  # type: ignore[attr-defined]
        self.sequence_config = model.sequence_encoder.config
        self.tasks: List[str] = list(model.tasks)
        self.dense_width: int = model.dense_width
        self.processor = RequestFeatureProcessor(
            self.sequence_config.max_seq_len,
            (
                self.sequence_config.action_feature,
                self.sequence_config.item_feature,
                self.sequence_config.candidate_feature,
            ),
        )
        self.scorer: Optional[RequestScorer] = (
            RequestScorer(self.model, self.config.dedup, self.config.int8_items).eval().to(self.device)
            if supports_request_scoring(model)
            else None
        )
        # The model's feature order: what logits_from_embeddings and the fused lookup use.
        self.sparse_feature_names: List[str] = list(model.sparse_feature_names)
        self.sparse_sizes: Dict[str, int] = {
            name: c.num_embeddings
            for c in model.embedding_bag_collection.embedding_bag_configs()
            for name in c.feature_names
        }
        self.schema = RequestSchema(
            self.sequence_config, self.dense_width, self.sparse_feature_names, self.sparse_sizes, self.processor
        )
        pad = self.config.pad_to_buckets
        self.pad_to_buckets = self.device.type == "cuda" if pad is None else pad
        size = self.config.max_candidates_per_batch
        if size is None:  # CPU: intermediates that stay in cache and in the heap
            size = self.config.candidate_buckets[-1] if self.device.type == "cuda" else 128
        self.max_candidates_per_batch = (
            min(size, self.config.candidate_buckets[-1]) if self.pad_to_buckets else size
        )
        self.use_cuda_graphs = self.device.type == "cuda" and self.config.cuda_graphs
        self._graphs: Dict[Tuple[int, int], CapturedBucket] = {}
        if self.config.compile and self.scorer is not None and not self.use_cuda_graphs:
            self.scorer.compile_encoder()

    @classmethod
    def from_checkpoint(cls, path: str, config: Optional[ServingConfig] = None) -> "Predictor":
        """Loads the model a ``transact-train`` run saved (see
        :func:`torchrec_transact.models.factory.load_trained_model`).

        Args:
            path (str): a checkpoint (``.../checkpoints/step_N``), a run's ``checkpoints``
                directory or the run's output directory (the latest checkpoint of either).
            config (Optional[ServingConfig]): how to serve.
        """
        model, info = load_trained_model(path)
        return cls(model, config, info.get("vocabulary"))

    # ------------------------------------------------------------------ requests

    def prepare(self, request: ScoringRequest) -> PreparedRequest:
        """Validates a request and builds its host tensors (see
        :mod:`torchrec_transact.serving.request` for what is refused and what is repaired)."""
        return self.schema.prepare(request)

    def random_request(
        self, num_candidates: int, num_events: int, seed: int = 0, request_time: float = 1.7e9
    ) -> ScoringRequest:
        """A valid request with random ids and features, for smoke and load tests (see
        :meth:`RequestSchema.random_request`)."""
        return self.schema.random_request(num_candidates, num_events, seed, request_time)

    def _autocast(self) -> torch.autocast:
        # cache_enabled=False: cached weight casts must not outlive a CUDA-graph capture.
        return torch.autocast(
            self.device.type if self.device.type != "meta" else "cpu",
            dtype=torch.bfloat16,
            enabled=self.config.bfloat16,
            cache_enabled=False,
        )

    def score(self, request: ScoringRequest) -> ScoringResult:
        """Per-task probabilities of each of the request's candidates.

        Raises:
            RequestError: for a request that cannot be scored (see
                :mod:`torchrec_transact.serving.request`).
        """
        return self._score(self.prepare(request))

    def _score(self, prepared: PreparedRequest) -> ScoringResult:
        if self.threads is not None:
            self.threads.update()
        if self.scorer is None:
            probabilities = self._score_model(prepared)
        else:
            probabilities = self.score_prepared(prepared).cpu()
        return self._result(prepared, probabilities)

    def score_raw(self, request: RawRequest) -> ScoringResult:
        """Scores a request in the training log's raw ids (a model trained on a log and
        loaded with :meth:`from_checkpoint`); see :mod:`torchrec_transact.serving.raw_ids`
        for unknown ids."""
        if self.raw_ids is None:
            raise ValueError("this model was not trained on a log with raw ids (no vocabulary.json); use score()")
        translated, unknown = self.raw_ids.translate(request)
        if request.dense is not None:
            return dataclasses.replace(self.score(translated), unknown_ids=unknown)
        if self.dense_width != len(DENSE_FEATURES):
            raise RequestError(f"dense is missing: this model takes {self.dense_width} dense features")
        prepared = self.prepare(dataclasses.replace(translated, dense=np.zeros(self.dense_width, dtype=np.float32)))
        row = dense_features(prepared.ages_s.numpy(), float(request.request_time))
        prepared.dense[:] = torch.tensor(row, dtype=torch.float32)
        return dataclasses.replace(self._score(prepared), unknown_ids=unknown)

    def score_naive(self, request: ScoringRequest) -> ScoringResult:
        """The same scores through the model's own batched forward: the processor repeats
        the sequence once per candidate and the model looks it up and encodes it N times
        (the path that serving without dedup takes; the reference for tests)."""
        prepared = self.prepare(request)
        return self._result(prepared, self._score_model(prepared))

    def _result(self, prepared: PreparedRequest, probabilities: torch.Tensor) -> ScoringResult:
        return ScoringResult(
            self.tasks,
            probabilities,
            int(prepared.item_ids.shape[0]),
            prepared.dropped_events,
            prepared.repaired_dense,
        )

    def _chunks(self, prepared: PreparedRequest) -> List[PreparedRequest]:
        """The request in batches of at most ``max_candidates_per_batch`` candidates."""
        n, size = prepared.num_candidates, self.max_candidates_per_batch
        if n <= size:
            return [prepared]
        return [prepared.candidates(s, min(s + size, n)) for s in range(0, n, size)]

    def _score_model(self, prepared: PreparedRequest) -> torch.Tensor:
        outputs = []
        for chunk in self._chunks(prepared):
            index, lengths = repeat_per_candidate(
                torch.tensor([chunk.item_ids.shape[0]]), torch.tensor([chunk.num_candidates])
            )
            sequence = sequence_kjt(
                chunk.action_types[index],
                chunk.item_ids[index],
                chunk.ages_s[index],
                lengths,
                chunk.candidate_ids,
                keys=self.processor.keys,
            )
            if self.side_sequences:
                sequence = with_side_sequences(sequence, self._side_values(chunk))
            sparse = categorical_kjt(self.sparse_feature_names, chunk.sparse_ids)
            with torch.inference_mode(), self._autocast():
                logits = self.model(
                    chunk.dense.to(self.device), sparse.to(self.device), sequence.to(self.device)
                )
            outputs.append(torch.sigmoid(logits.float()).cpu())
        return torch.cat(outputs)

    def _side_values(self, chunk: PreparedRequest) -> List[SideSequenceValues]:
        """The lifelong and impression sequences repeated once per candidate (the naive
        batch's extra KJT keys; ages are not needed once leakage is out: zeros)."""
        config, n = self.sequence_config, chunk.num_candidates
        sides = []
        for keys, values in (
            ((config.lifelong_action_feature, config.lifelong_item_feature),
             (chunk.lifelong_action_types, chunk.lifelong_item_ids)),
            ((config.impression_item_feature,), (chunk.impression_item_ids,)),
        ):
            if values[-1] is None:
                continue
            length = values[-1].shape[0]
            sides.append(SideSequenceValues(
                tuple(keys), tuple(v.repeat(n) for v in values), torch.zeros(n * length), torch.full((n,), length)))
        return sides

    def score_prepared(self, prepared: PreparedRequest) -> torch.Tensor:
        """The scorer on a prepared request; float [N, T] on the serving device."""
        if self.scorer is None:
            raise ValueError("this model's sequence encoder has no request scorer; use score()")
        outputs = [
            self._score_bucket(chunk) if self.pad_to_buckets else self._score_exact(chunk)
            for chunk in self._chunks(prepared)
        ]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _score_exact(self, prepared: PreparedRequest) -> torch.Tensor:
        """No padding beyond one position for an empty sequence."""
        length = int(prepared.item_ids.shape[0])
        inputs = self._host_inputs(prepared, prepared.num_candidates, max(length, 1))
        if length > 0:  # every position is real: no mask to apply
            inputs[-1] = None
        if self.side_sequences:
            inputs += [prepared.lifelong_action_types, prepared.lifelong_item_ids, prepared.impression_item_ids]
        if self.device.type != "cpu":
            inputs = to_device(inputs, self.device)
        with torch.inference_mode(), self._autocast():
            return self.scorer(*inputs)

    def _host_inputs(
        self, prepared: PreparedRequest, num_candidates: int, length: int
    ) -> List[Optional[torch.Tensor]]:
        """The scorer's arguments on the host, padded to (num_candidates, length)."""
        real_length = prepared.item_ids.shape[0]

        def pad(t: torch.Tensor, size: int) -> torch.Tensor:
            if t.shape[0] == size:
                return t
            return torch.cat([t, t.new_zeros(size - t.shape[0], *t.shape[1:])])

        return [
            pad(prepared.dense, num_candidates),
            pad(prepared.sparse_ids, num_candidates),
            pad(prepared.candidate_ids, num_candidates),
            pad(prepared.action_types, length),
            pad(prepared.item_ids, length),
            torch.tensor(real_length, dtype=torch.long),
        ]

    def _bucket(self, n: int, length: int) -> Tuple[int, int]:
        candidates = next(b for b in self.config.candidate_buckets if b >= n)
        sequences = self.config.sequence_buckets or (self.sequence_config.max_seq_len,)
        latest_k = max(self.sequence_config.latest_k, 1)
        sequence = next((b for b in sequences if b >= max(length, latest_k)), max(sequences))
        return candidates, max(sequence, length)

    def _score_bucket(self, prepared: PreparedRequest) -> torch.Tensor:
        n = prepared.num_candidates
        key = self._bucket(n, int(prepared.item_ids.shape[0]))
        inputs = self._host_inputs(prepared, *key)
        if not self.use_cuda_graphs:
            with torch.inference_mode(), self._autocast():
                return self.scorer(*to_device(inputs, self.device))[:n]
        if key not in self._graphs:
            self._graphs[key] = CapturedBucket(self.scorer, self.device, self._autocast, inputs)
        return self._graphs[key].replay(inputs)[:n].clone()  # the next replay overwrites it

    def export(self, path: str) -> None:
        """Saves the scorer with ``torch.export`` (see
        :func:`~torchrec_transact.serving.export.export_scorer`): loadable without this
        package, ``torch.export.load(path).module()(dense, sparse_ids, candidate_ids,
        action_types, item_ids, length)`` returns [N, T] probabilities for sequences longer
        than ``latest_k`` (pad a shorter one and pass its real length).
        """
        if self.scorer is None:
            raise ValueError(f"no request scorer for {type(self.model.sequence_encoder).__name__}")
        if self.side_sequences:
            raise ValueError("export of a model with lifelong or impression sequences (TransAct V2) is not built yet")
        max_seq_len = self.sequence_config.max_seq_len
        example = self.prepare(self.random_request(4, max_seq_len + 1))
        export_scorer(self.scorer, self._host_inputs(example, 4, max_seq_len), path)
