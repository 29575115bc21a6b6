#!/usr/bin/env python3
"""The request scorer saved with ``torch.export``: a program with dynamic candidate count
and sequence length, loadable without this package (or torchrec)."""

from typing import Optional, Sequence

import torch

from torchrec_transact.serving.scorer import RequestScorer

MAX_EXPORTED_LENGTH = 4096


def export_scorer(scorer: RequestScorer, example_inputs: Sequence[Optional[torch.Tensor]], path: str) -> None:
    """Saves ``scorer`` with ``torch.export`` (dynamic N and L, L > latest_k).

    ``torch.export.load(path).module()(dense, sparse_ids, candidate_ids, action_types,
    item_ids, length)`` returns [N, T] probabilities; pad a shorter sequence to that
    minimum and pass its real length. The scorer is exported on the CPU and moved back.

    Args:
        scorer (RequestScorer): the scorer to save.
        example_inputs (Sequence[Optional[torch.Tensor]]): its six arguments on the host,
            with more than ``latest_k`` sequence positions and a ``length`` tensor.
        path (str): the ``.pt2`` file to write.
    """
    device = next(scorer.parameters()).device
    # A slice of the first latest_k tokens is contiguous exactly when L == latest_k;
    # export cannot keep that case dynamic, so sequences are longer than latest_k.
    min_length = scorer.model.sequence_encoder.config.latest_k + 1
    candidates = torch.export.Dim("candidates", min=1)
    length = torch.export.Dim("sequence_length", min=min_length, max=max(min_length, MAX_EXPORTED_LENGTH))
    dynamic = ({0: candidates}, {0: candidates}, {0: candidates}, {0: length}, {0: length}, {})
    scorer = scorer.cpu()
    try:
        with torch.no_grad():
            program = torch.export.export(scorer, tuple(example_inputs), dynamic_shapes=dynamic)
    finally:
        scorer.to(device)
    torch.export.save(program, path)
