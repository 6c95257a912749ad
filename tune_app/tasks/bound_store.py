"""Ray Train's torch process group, with its rendezvous store bound to one address.

Ray Train's ``TorchConfig`` rendezvous (``env://`` or ``tcp://``) makes rank 0
start torch's ``TCPStore``, which listens on every interface of the node
(``*:PORT``). :class:`BoundTorchConfig` does the same set-up except that rank 0
binds the store's socket itself, to its node's Ray address (127.0.0.1 on a local
cluster, the node's cluster address on a real one), and hands it to
``TCPStore(master_listen_fd=...)``. Everything else (backend choice, the
``MASTER_ADDR``/``RANK``/... variables, shutdown) is Ray's own ``TorchConfig``.

It relies on two Ray Train internals, ``_TorchBackend`` and the worker-side
helpers next to it; ``tests/test_security.py`` lists a Ray Train worker's
listening sockets during a run, so a Ray upgrade that breaks this fails there.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

import ray
import torch.distributed as dist
from ray.train._internal.utils import get_address_and_port
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

_LISTENERS: list[socket.socket] = []  # rank 0's bound socket lives as long as its store


def _set_master(addr: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)


def _bound_process_group(
    backend: str, world_rank: int, world_size: int, addr: str, port: int, timeout_s: int
) -> None:
    """Join the process group through a ``TCPStore`` that rank 0 serves on ``addr`` only."""
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


class _BoundTorchBackend(_TorchBackend):
    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        backend = backend_config.backend
        if backend is None:
            gpus = worker_group.get_resources_per_worker().get("GPU", 0)
            backend = "nccl" if gpus > 0 else "gloo"
        addr, port = worker_group.execute_single(0, get_address_and_port)
        worker_group.execute(_set_master, addr=addr, port=port)
        worker_group.execute(_set_torch_distributed_env_vars)
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


class BoundTorchConfig(TorchConfig):
    """Ray Train's ``TorchConfig`` with the rendezvous store on the node's address only."""

    @property
    def backend_cls(self) -> type:
        return _BoundTorchBackend
