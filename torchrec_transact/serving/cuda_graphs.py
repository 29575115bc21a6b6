#!/usr/bin/env python3
"""CUDA graphs for serving: one captured graph per (candidates, sequence length) bucket,
its inputs in one static device buffer that each request's packed host buffer is copied
into."""

from contextlib import AbstractContextManager
from typing import Callable, List, Optional

import torch
from torch import nn

from torchrec_transact.serving.packing import pack, unpack


class CapturedBucket:
    """One (candidates, sequence length) bucket captured as a CUDA graph.

    Its inputs live in one static device buffer; a replay copies the request's packed,
    pinned host buffer into it (the one host-to-device copy), replays and returns the
    static output.

    Args:
        scorer (nn.Module): the request scorer, on ``device``.
        device (torch.device): a CUDA device.
        autocast (Callable[[], AbstractContextManager]): makes the precision context the
            scorer runs under (entered for the warm-up and for the capture; it must not
            cache weight casts beyond the capture).
        inputs (List[Optional[torch.Tensor]]): the scorer's arguments on the host, padded
            to the bucket; every replay takes tensors of these shapes and dtypes.
    """

    def __init__(
        self,
        scorer: nn.Module,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
        inputs: List[Optional[torch.Tensor]],
    ) -> None:
        self.host, self.layout = pack(inputs, pin_memory=True)
        self.host_views = unpack(self.host, self.layout)
        self.device_buffer = self.host.to(device)
        device_inputs = unpack(self.device_buffer, self.layout)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream), torch.inference_mode(), autocast():
            for _ in range(3):  # warm up kernels and allocator outside the capture
                scorer(*device_inputs)
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode(), autocast():
            self.output = scorer(*device_inputs)

    def replay(self, inputs: List[Optional[torch.Tensor]]) -> torch.Tensor:
        """The scorer's output on ``inputs`` (host tensors of the captured shapes); the
        next replay overwrites it."""
        for view, value in zip(self.host_views, inputs):
            view.copy_(value)
        self.device_buffer.copy_(self.host, non_blocking=True)
        self.graph.replay()
        return self.output
