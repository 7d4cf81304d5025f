"""Multi-process training with torchrun: process group from the environment, small collectives.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with WORLD_SIZE > 1
the process group uses NCCL on CUDA and gloo on CPU. Without them training runs in one process.
torchrun starts its workers in sessions of their own, so a launcher killed with SIGKILL would
leave them training as orphans: each worker asks the kernel for SIGTERM when its parent dies
(`diffspace.system.end_with_parent`), which the trainer turns into a checkpoint and a clean exit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from diffspace.system import end_with_parent




@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on the process that writes files and prints."""
        return self.rank == 0


def start(device: str) -> World:
    """Join the torchrun process group if WORLD_SIZE > 1 (backend NCCL when `device` is "cuda",
    gloo otherwise); a one-process World otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    end_with_parent()
    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return world


def stop(world: World) -> None:
    """Leave the process group joined by `start`."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def mean(value: Tensor, world: World) -> Tensor:
    """The mean of `value` over all processes (itself in one process)."""
    if world.size == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / world.size


def any_true(flag: bool, world: World, device: torch.device) -> bool:
    """True when `flag` is true on any process."""
    if world.size == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather(obj: Any, world: World) -> list[Any]:
    """Every process's `obj`, in rank order (a list of one in one process)."""
    if world.size == 1:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out
