"""Shared pieces of the tests that spawn gloo processes."""

import os
import socket
import sys

import torch
import torch.distributed as dist


def free_port():
    """A TCP port on 127.0.0.1 that is free now (for MASTER_PORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_gloo(rank, port, world):
    """Join a gloo process group on 127.0.0.1:``port`` as ``rank`` of ``world``, one intra-op
    thread per process (2 cores)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def leave_worker():
    """End a spawned worker without interpreter finalisation: in about 1 run in 50 (DDP and FSDP
    alike, with a TCP or a file store) a worker aborted there, after its work was done, in torch's
    own teardown ("terminate called without an active exception"). A failure before this call
    still raises, and torch's spawn wrapper reports it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
