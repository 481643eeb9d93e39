"""Run a test function on N gloo ranks of one CPU machine: `spawn_gloo(worker, nprocs, tmp_path, *args)` starts
nprocs processes, each joins a gloo group through a file in tmp_path, and calls worker(rank, world, *args).
worker must be a module-level function (the processes are spawned, so it travels by name); whatever it raises
fails the test. Results come back through files the worker writes under tmp_path."""
import datetime
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TIMEOUT = datetime.timedelta(seconds=120)  # a rank stuck in a collective fails the test instead of hanging CI


def _rank_main(rank: int, worker, world: int, init_file: str, args: tuple):
    torch.set_num_threads(1)  # N ranks share the cores; one thread each also keeps float sums deterministic
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=TIMEOUT)
    worker(rank, world, *args)
    # Every rank finishes before any tears down: a rank destroying the group while another is still
    # inside gloo aborts the process ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()
    # Leave without running C++ static destructors: at interpreter exit gloo's background threads now and then still
    # run and abort the rank ("terminate called without an active exception"; 2 of 15 runs of the gloo tests).
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)


def spawn_gloo(worker, nprocs: int, tmp_path, *args) -> None:
    init_file = tmp_path / "gloo_init"
    assert not init_file.exists(), "one spawn_gloo per tmp_path: the init file must be fresh"
    mp.spawn(_rank_main, args=(worker, nprocs, str(init_file), args), nprocs=nprocs, join=True)
