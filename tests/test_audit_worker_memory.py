"""The exact stage holds little besides the head: its forked workers share the parent's memory
instead of copying it, and the points where the witness search settled wait on disk until a task
takes one.

A forked worker shares the parent's pages until it writes to one. The garbage collector's passes
in a worker write to every container object the parent made (a verdict per class, the settled
points), so before the workers fork the parent freezes its objects (``gc.freeze``) and gives its
C heap's free pages back to the system (glibc's ``malloc_trim``): neither is then copied into a
worker or held by the parent. Each check reads this process's or a worker's private memory from
``/proc`` (Linux; skipped elsewhere).
"""

import ctypes
import ctypes.util
import gc
import multiprocessing as mp
import os

import numpy as np
import pytest

from logitkit.audit import exact
from logitkit.audit.decision import Decision
from logitkit.audit.evidence_store import RowStore

LINUX = os.path.exists("/proc/self/smaps_rollup")


def private_mib(field: str = "Private_Dirty") -> float:
    """This process's private (copied or written) memory in MiB, from /proc."""
    with open("/proc/self/smaps_rollup") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field + ":")) / 1024


def resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def collection_cost_in_worker(task):
    """A worker's task: the private memory one full garbage collection writes (MiB)."""
    before = private_mib()
    gc.collect()
    return task[0], Decision("argmaxable", margin=private_mib() - before)


@pytest.mark.skipif(not LINUX or "fork" not in mp.get_all_start_methods(),
                    reason="needs Linux's /proc and fork")
def test_a_workers_garbage_collection_copies_none_of_the_parents_objects(monkeypatch):
    held = [[k, float(k)] for k in range(400_000)]  # a verdict per class of a large head
    monkeypatch.setattr(exact, "_decide", collection_cost_in_worker)
    decisions = [None] * 4
    exact._run([(j,) for j in range(4)], decisions, jobs=2, on_done=None, on_decision=None)
    copied = [decision.margin for decision in decisions]
    # Unfrozen, one collection in a worker copies the pages of all 400000 lists (about 35 MiB
    # here) and of the interpreter's own objects (about 15 MiB).
    assert max(copied) < 5.0, copied
    assert gc.get_freeze_count() == 0  # the parent's objects are collectable again afterwards
    assert len(held) == 400_000


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_a_callers_own_frozen_objects_stay_frozen(monkeypatch):
    monkeypatch.setattr(exact, "_decide", collection_cost_in_worker)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        exact._run([(0,), (1,)], [None, None], jobs=2, on_done=None, on_decision=None)
        assert gc.get_freeze_count() >= frozen > 0
    finally:
        gc.unfreeze()


def glibc_trims() -> bool:
    libc = ctypes.util.find_library("c")
    return bool(libc) and hasattr(ctypes.CDLL(libc), "malloc_trim")


@pytest.mark.skipif(not LINUX or not glibc_trims(), reason="needs Linux and glibc's malloc_trim")
def test_the_parent_gives_its_heaps_free_pages_back_before_the_workers_fork():
    blocks = [np.ones(8192) for _ in range(400)]  # 64 KiB each: below malloc's mmap threshold
    keeper = np.ones(8192)  # allocated last, so the freed blocks are not the heap's top
    del blocks  # 25 MiB free inside the heap, still resident
    resident = resident_mib()
    try:
        exact._before_fork()
    finally:
        gc.unfreeze()
    assert resident - resident_mib() > 15.0
    assert keeper.sum() == 8192


class RecordedRows(RowStore):
    """A RowStore that notes each read in ``events``."""

    def __init__(self, width: int, events: list) -> None:
        super().__init__(width)
        self.events = events

    def get(self, key, default=None):
        self.events.append(("read", key))
        return super().get(key, default)


def test_the_exact_stage_reads_each_settled_point_as_its_class_is_taken():
    rng = np.random.default_rng(0)
    outer = rng.normal(size=(60, 5))
    weight = np.vstack([outer, 0.5 * rng.dirichlet(np.ones(60), size=4) @ outer])  # 4 interior
    classes = np.arange(60, 64)
    events: list = []
    settled = RecordedRows(5, events)
    for j in range(4):
        settled.add(j, np.zeros(5))  # the search's points: anywhere near the minimiser serves
    rivals = np.argsort(-(weight @ weight[classes].T).T, axis=1)[:, 1:9]
    decisions = exact.decide_many(weight, None, classes, rivals, None, 1e-9, jobs=1,
                                  settled=settled, on_done=lambda n: events.append(("done",)))
    assert [d.status for d in decisions] == ["unargmaxable"] * 4
    assert events == [e for j in range(4) for e in (("read", j), ("done",))]  # one at a time
