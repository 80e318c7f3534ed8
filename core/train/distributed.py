"""Training on several processes with DistributedDataParallel (imports torch; load it lazily).

Under ``torchrun`` (the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` with a
world of 2 or more) :func:`core.train.loop.train` (semantic models) and
:func:`core.train.runner.run_epochs` (instance and action models) call :func:`setup`, which
joins the process group (gloo on the CPU, nccl on CUDA with the device ``cuda:LOCAL_RANK``).
They then wrap the model in DDP, give each rank its shard of the training split (a
DistributedSampler with a fixed seed, ``set_epoch`` every epoch), make every rank see the same
validation metrics (the semantic loop all-reduces each rank's share; the runner scores on rank
0 and broadcasts the row) so that all take the same early-stopping decision, and write
checkpoints and the log on rank 0 only.

:func:`launch` is ``segstudio-cli train --nproc N``: it runs N local processes through
``torch.distributed.run`` on a free port and prints rank 0's JSON summary.

Test hook: with ``SEGSTUDIO_DDP_DUMP=DIR`` every rank saves its final state dict (and the
files it reports) to ``DIR/rank<R>.pt``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")
DUMP_ENV = "SEGSTUDIO_DDP_DUMP"
ARGV_ENV = "SEGSTUDIO_DDP_ARGV"  # the command line of core.train.ddp_worker (JSON)


def launched() -> bool:
    """Whether this process is one of several started by torchrun."""
    return (all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
            and int(os.environ["WORLD_SIZE"]) > 1)


@dataclass
class Context:
    """This process's place in the group (``owned``: this module opened the group)."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    owned: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def sum(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Element-wise sum over the ranks (float64)."""
        tensor = torch.as_tensor(np.asarray(values, np.float64), device=self._comm_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy()

    def any(self, flag: bool) -> bool:
        return bool(self.sum([float(flag)])[0] > 0)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank; the others pass None."""
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def sync_buffers(self, module: nn.Module) -> None:
        """Average the floating buffers (BatchNorm running statistics) over the ranks: DDP
        only copies rank 0's before each forward, so they differ after the last step."""
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer /= self.world
            else:
                dist.broadcast(buffer, 0)

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def close(self, failed: bool = False) -> None:
        """Barrier (unless this rank failed: the others may never reach it) and leave the
        group if this module opened it."""
        if not failed:
            self.barrier()
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def setup(device: torch.device) -> Context:
    """Join the process group of torchrun; ``device``: the configured one (a CUDA device
    becomes ``cuda:LOCAL_RANK``)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank,
                                world_size=world)
    return Context(rank, dist.get_world_size(), local_rank, device, owned)


def run(device_name: str, body: Callable[[torch.device, Context | None], T]) -> T:
    """``body(device, ctx)`` on the device ``device_name`` selects: in a single process with
    ``ctx`` None, or under torchrun inside the process group (joined here, on this rank's
    device; left afterwards, marked failed when ``body`` raised)."""
    from core.inference.device import select_device

    device = select_device(device_name)
    if not launched():
        return body(device, None)
    ctx = setup(device)
    try:
        result = body(ctx.device, ctx)
    except BaseException:
        ctx.close(failed=True)
        raise
    ctx.close()
    return result


def shard_order(train_idx: list[int], needed: int, epoch: int, seed: int,
                ctx: Context) -> list[int]:
    """This rank's ``needed`` training indices of ``epoch``: its DistributedSampler shard of
    the split (the same shuffle on every rank: fixed seed), repeated with later sampler
    epochs when the epoch needs more."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(train_idx, num_replicas=ctx.world, rank=ctx.rank,
                                 shuffle=True, seed=seed)
    order: list[int] = []
    round_ = 0
    while len(order) < needed:
        sampler.set_epoch(epoch * 10_000 + round_)
        order.extend(train_idx[i] for i in sampler)
        round_ += 1
    return order[:needed]


def no_sync(net: nn.Module, accumulating: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` for the micro-steps of gradient accumulation."""
    if accumulating and hasattr(net, "no_sync"):
        return net.no_sync()
    return contextlib.nullcontext()


def dump(ctx: Context, module: nn.Module, paths: dict[str, Any]) -> None:
    """The test hook (:data:`DUMP_ENV`): this rank's final weights and reported files."""
    folder = os.environ.get(DUMP_ENV)
    if not folder:
        return
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    torch.save({"state_dict": state, "paths": {k: None if v is None else str(v)
                                               for k, v in paths.items()}},
               Path(folder) / f"rank{ctx.rank}.pt")


# -- segstudio-cli train --nproc N ----------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


_FORWARDED = ("epoch ", "warning: ")


def launch(nproc: int, cli_args: Sequence[str]) -> tuple[int, str, str | None]:
    """Run ``segstudio-cli <cli_args>`` (:mod:`core.train.ddp_worker`) in ``nproc`` processes under torch.distributed.run.

    Rank 0's epoch and warning lines are passed on to stderr as they come. Returns the exit
    code, the standard output (rank 0's summary) and the first error line of a child (without
    its ``segstudio-cli: error:`` prefix; None when there was none)."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
               "--nnodes=1", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
               "-m", "core.train.ddp_worker"]
    env = dict(os.environ)
    env[ARGV_ENV] = json.dumps(list(cli_args))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("LOGLEVEL", "ERROR")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    errors: list[str] = []
    tail: list[str] = []

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            text = line.rstrip("\n")
            if "error: " in text and text.startswith("segstudio-cli"):
                errors.append(text.split("error: ", 1)[1])
            elif text.startswith(_FORWARDED):
                print(text, file=sys.stderr, flush=True)
            elif text.strip():
                tail[:] = [*tail[-19:], text]

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert process.stdout is not None
    stdout = process.stdout.read()
    code = process.wait()
    reader.join()
    if code != 0 and not errors:
        last = next((t for t in reversed(tail) if "Error" in t), tail[-1] if tail else "")
        errors.append(f"a training process failed (exit code {code}){': ' if last else ''}"
                      f"{last.strip()}")
    # a rank's own error before the "unexpected" ones of the ranks its failure cut off
    errors.sort(key=lambda e: e.startswith("unexpected "))
    return code, stdout, errors[0] if errors else None

