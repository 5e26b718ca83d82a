"""Distributed data-parallel training under `torchrun` (and so the Training Operator's PyTorchJob).

`scenerec train` runs unchanged under torchrun: each rank trains on its shard of the training
sequences with gradients all-reduced by DistributedDataParallel (gloo on CPU, NCCL on GPU), every
rank follows the same early-stopping decisions (rank 0's), and only rank 0 writes the artifact.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def init_distributed(device: str = "cpu") -> tuple[int, int]:
    """(rank, world size): joins the process group torchrun describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        log.info("rank %d of %d joined the %s process group", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_rank(), dist.get_world_size()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def from_rank_zero(value: float) -> float:
    """Rank 0's value on every rank (decisions such as early stopping must agree)."""
    _, world = rank_and_world()
    if world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())
