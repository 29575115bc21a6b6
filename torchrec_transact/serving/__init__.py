#!/usr/bin/env python3
"""Serving: score one request (a user's raw recent events and N candidates) with a trained
TransAct-DCN or TransAct-DLRM.

    raw events, request time --RequestFeatureProcessor--> sequence [L] (no leakage, deduped)
    candidates [N], their dense [N, W] and categorical [N, F] features
          '---------- packed into one host buffer (pinned on CUDA) ----------'
                                   |  one host-to-device copy
                       RequestScorer (plain tensors: exportable, CUDA-graph capturable)
          one fused categorical lookup | one item lookup of L + N ids | RequestTransAct
                                   model.logits_from_embeddings(...) -> sigmoid -> [N, T]

The paper's GPU serving rests on four things, all here: fused embedding lookups (every
categorical table concatenated into one, with per-feature row offsets), one combined
host-to-device copy per request, large batches (a request's N candidates are one batch;
the user's sequence is looked up and projected once, see
:mod:`torchrec_transact.serving.dedup`), and CUDA graphs (one per candidate-count and
sequence-length bucket, inputs padded to the bucket). On CPU the scorer runs eagerly under
``torch.inference_mode``, optionally under bfloat16 autocast.

One concern a module:

* :mod:`~torchrec_transact.serving.request`: requests, their checks (what is refused and
  what is repaired), results;
* :mod:`~torchrec_transact.serving.dedup`: the encoder with the user's part shared by the
  candidates;
* :mod:`~torchrec_transact.serving.scorer`: the fused lookup and the request scorer;
* :mod:`~torchrec_transact.serving.packing`: the one host-to-device copy;
* :mod:`~torchrec_transact.serving.cuda_graphs`: one captured graph per bucket;
* :mod:`~torchrec_transact.serving.export`: the scorer saved with ``torch.export``;
* :mod:`~torchrec_transact.serving.predictor`: :class:`Predictor`, which runs them.
"""

from torchrec_transact._lazy import lazy_exports

# What each name is in; loaded on first use, so that the request encoder (dedup), packing
# and CUDA graphs import on a bare PyTorch (the rest needs torchrec).
_WHERE = {
    "load_trained_model": "torchrec_transact.models.factory",
    "RequestTransAct": "torchrec_transact.serving.dedup",
    "export_scorer": "torchrec_transact.serving.export",
    "pack": "torchrec_transact.serving.packing", "unpack": "torchrec_transact.serving.packing",
    "Predictor": "torchrec_transact.serving.predictor", "ServingConfig": "torchrec_transact.serving.predictor",
    "RawIdTranslator": "torchrec_transact.serving.raw_ids", "RawRequest": "torchrec_transact.serving.raw_ids",
    **{name: "torchrec_transact.serving.request" for name in (
        "PreparedRequest", "RequestError", "RequestSchema", "ScoringRequest", "ScoringResult")},
    **{name: "torchrec_transact.serving.scorer" for name in (
        "FusedEmbeddingLookup", "RequestScorer", "supports_request_scoring")},
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

__all__ = [
    "FusedEmbeddingLookup",
    "Predictor",
    "PreparedRequest",
    "RawIdTranslator",
    "RawRequest",
    "RequestError",
    "RequestSchema",
    "RequestScorer",
    "RequestTransAct",
    "ScoringRequest",
    "ScoringResult",
    "ServingConfig",
    "export_scorer",
    "load_trained_model",
    "pack",
    "supports_request_scoring",
    "unpack",
]
