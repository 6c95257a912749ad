"""Ray Train's torch process group, with its rendezvous store bound to one address.

Ray Train's ``TorchConfig`` rendezvous (``env://`` or ``tcp://``) makes rank 0
start torch's ``TCPStore``, which listens on every interface of the node
(``*:PORT``). :class:`BoundTorchConfig` does the same set-up except that rank 0
binds the store's socket itself, to its node's Ray address (127.0.0.1 on a local
cluster, the node's cluster address on a real one), and hands it to
``TCPStore(master_listen_fd=...)``. Everything else (backend choice, the
``MASTER_ADDR``/``RANK``/... variables, the CUDA device, shutdown) is Ray's own
``TorchConfig`` code, called on the workers.

Torch-free at import: Train's controller unpickles this config in every trial, and
Ray's ``TorchConfig`` module imports torch (about 2 s of import time here, on the trial's
critical path); torch is imported on the workers only, which train with it anyway.

It relies on Ray Train internals (the worker-side helpers of ``ray.train.torch.config``);
``tests/test_security.py`` lists a Ray Train worker's listening sockets during a run,
so a Ray upgrade that breaks this fails there.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import ray
from ray._private.ray_constants import env_integer
from ray.exceptions import GetTimeoutError
from ray.train._internal.utils import get_address_and_port
from ray.train.backend import Backend, BackendConfig
from ray.train.constants import (
    DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
    TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
)
from ray.train.v2._internal.util import TrainingFramework

logger = logging.getLogger(__name__)
_LISTENERS: list[socket.socket] = []  # rank 0's bound socket lives as long as its store


def _set_master(addr: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)


def _set_distributed_env() -> None:
    from ray.train.torch.config import _set_torch_distributed_env_vars

    _set_torch_distributed_env_vars()


def _bound_process_group(
    backend: str, world_rank: int, world_size: int, addr: str, port: int, timeout_s: int
) -> None:
    """Join the process group through a ``TCPStore`` that rank 0 serves on ``addr`` only."""
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    if backend == "nccl":  # as Ray's own set-up: fail rather than hang on a stuck collective
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    if world_rank == 0:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(128)
        _LISTENERS.append(sock)
        store = dist.TCPStore(addr, port, world_size, True, timeout, master_listen_fd=sock.fileno())
    else:
        store = dist.TCPStore(addr, port, world_size, False, timeout)
    dist.init_process_group(
        backend=backend, store=store, rank=world_rank, world_size=world_size, timeout=timeout
    )


def _shutdown(destroy_process_group: bool) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy_process_group)


class _DeviceContext:
    """Around the training function on a worker: Ray's ``TorchConfig`` context (the
    worker's CUDA device as torch's default), imported there."""

    def __enter__(self) -> None:
        from ray.train.torch.config import TorchConfigContextManager

        self._ctx = TorchConfigContextManager()
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> bool:
        return bool(self._ctx.__exit__(*exc))


class _BoundTorchBackend(Backend):
    share_cuda_visible_devices: bool = True  # as Ray's torch backend

    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        backend = backend_config.backend
        if backend is None:
            gpus = worker_group.get_resources_per_worker().get("GPU", 0)
            backend = "nccl" if gpus > 0 else "gloo"
        addr, port = worker_group.execute_single(0, get_address_and_port)
        worker_group.execute(_set_master, addr=addr, port=port)
        worker_group.execute(_set_distributed_env)
        ray.get(
            [
                worker_group.execute_single_async(
                    i,
                    _bound_process_group,
                    backend=backend,
                    world_rank=i,
                    world_size=len(worker_group),
                    addr=addr,
                    port=port,
                    timeout_s=backend_config.timeout_s,
                )
                for i in range(len(worker_group))
            ]
        )

    def on_shutdown(self, worker_group: Any, backend_config: Any) -> None:
        futures = worker_group.execute_async(_shutdown, destroy_process_group=len(worker_group) > 1)
        timeout_s = env_integer(
            TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S
        )
        try:
            ray.get(futures, timeout=timeout_s)
        except GetTimeoutError:
            logger.warning("Torch process group shutdown timed out after %s seconds", timeout_s)


@dataclass
class BoundTorchConfig(BackendConfig):
    """Ray Train's ``TorchConfig`` with the rendezvous store on the node's address only.

    ``backend``: ``gloo``, ``nccl`` or None (``nccl`` when workers have GPUs, else
    ``gloo``); ``timeout_s``: process-group operations, as ``TorchConfig``'s.
    """

    backend: str | None = None
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type:
        return _BoundTorchBackend

    @property
    def train_func_context(self) -> type:
        return _DeviceContext

    @property
    def framework(self) -> TrainingFramework:
        return TrainingFramework.TORCH

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "timeout_s": self.timeout_s}
