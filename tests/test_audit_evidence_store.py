"""Certificates past a memory budget wait in a temporary file and come back bit for bit.

A whole vocabulary's certificates (2.7 GB for a 151936 x 896 head) need not stay resident: the
store keeps the first bytes in memory and appends the rest to an anonymous file. These tests
compare each certificate read back with the one put in, run the audit with every certificate on
disk against the audit with every one in memory, and measure the memory the store holds.
"""

import json
import pickle
import tracemalloc

import numpy as np
import pytest

from logitkit.audit import check_argmaxable, evidence_store
from logitkit.audit.distributed import merge_results, split_classes
from logitkit.audit.evidence_store import CertificateStore, RowStore
from logitkit.audit.verify import Certificate


def certificate(rows: int, seed: int, kind: str = "depth", offset: int = 0) -> Certificate:
    rng = np.random.default_rng(seed)
    weights = rng.random(rows)
    return Certificate(support=offset + rng.permutation(10 * rows)[:rows],
                       weights=weights / weights.sum(), kind=kind,
                       residual=float(rng.random() * 1e-14), bound=float(-rng.random()))


def same(a: Certificate, b: Certificate) -> bool:
    return (a.support.dtype == b.support.dtype and np.array_equal(a.support, b.support)
            and a.weights.dtype == np.float64 and np.array_equal(a.weights, b.weights)
            and (a.kind, a.residual, a.bound) == (b.kind, b.residual, b.bound))


def head_with_interior_rows(seed: int, n: int = 300, d: int = 8, interior: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    outer = rng.normal(size=(n, d)) * np.exp(0.5 * rng.normal(size=(n, 1)))
    mixes = rng.dirichlet(np.ones(n), size=interior)
    return np.vstack([outer, 0.9 * mixes @ outer]).astype(np.float32)


@pytest.mark.parametrize("budget", [0, 500, 10**9])
def test_certificates_come_back_bit_for_bit_wherever_they_wait(budget):
    put = {k: certificate(rows, seed=k) for k, rows in zip([9, 2, 40, 7], [1, 30, 17, 64],
                                                           strict=True)}
    put[5] = certificate(3, seed=5, offset=2**31)  # ids past int32 stay int64
    store = CertificateStore(memory_budget=budget)
    for k, cert in put.items():
        store.add(k, cert)
    assert list(store) == list(put) and len(store) == len(put) and 40 in store and 3 not in store
    assert store[5].support.dtype == np.int64 and store[9].support.dtype == np.int32
    for k, cert in put.items():
        assert same(store[k], cert)
    total = sum(c.support.nbytes + c.weights.nbytes for c in put.values())
    assert store.bytes_in_memory + store.bytes_on_disk == total
    assert store.bytes_in_memory <= budget
    assert (store.bytes_on_disk > 0) == (budget < total)


def test_reading_between_additions_leaves_every_certificate_intact():
    store = CertificateStore(memory_budget=0)
    put = [certificate(7 + 3 * k, seed=k) for k in range(6)]
    for k, cert in enumerate(put):
        store.add(k, cert)
        assert same(store[k], cert) and same(store[0], put[0])  # reads move the file position
    assert all(same(store[k], cert) for k, cert in enumerate(put))


def test_a_class_is_held_once_and_the_budget_cannot_be_negative():
    store = CertificateStore(memory_budget=0)
    store.add(1, certificate(4, seed=1))
    with pytest.raises(KeyError, match="already held"):
        store.add(1, certificate(4, seed=2))
    with pytest.raises(ValueError, match="memory_budget"):
        CertificateStore(memory_budget=-1)


def test_rekeyed_moves_aliases_drops_and_adds_in_the_order_given():
    store = CertificateStore(memory_budget=300)
    first, second, third = certificate(10, 1), certificate(40, 2), certificate(5, 3)
    store.add(0, first)  # in memory (120 bytes)
    store.add(1, second)  # on disk
    store.add(2, third)  # in memory
    extra = certificate(50, 4)
    moved = store.rekeyed([(12, 1), (10, 0), (11, 0), (13, extra)])
    assert list(moved) == [12, 10, 11, 13] and len(store) == 0
    assert same(moved[12], second) and same(moved[10], first) and same(moved[11], first)
    assert same(moved[13], extra)
    assert moved.bytes_on_disk == second.support.nbytes + second.weights.nbytes + \
        extra.support.nbytes + extra.weights.nbytes  # the extra went past the budget too
    with pytest.raises(KeyError):
        moved.rekeyed([(1, 99)])


def test_a_pickled_store_arrives_whole_and_spills_again():
    store = CertificateStore(memory_budget=0)
    put = {k: certificate(20 + k, seed=k) for k in range(5)}
    for k, cert in put.items():
        store.add(k, cert)
    copy = pickle.loads(pickle.dumps(store))
    assert copy.memory_budget == 0 and copy.bytes_on_disk == store.bytes_on_disk
    assert list(copy) == list(put) and all(same(copy[k], c) for k, c in put.items())


def test_certificates_on_disk_are_not_held_in_memory():
    """120 MB of certificate rows: with no budget the store holds a few hundred bytes per
    certificate in memory; with a 64 MiB budget it holds about 64 MiB."""
    made = [certificate(100_000, seed=s) for s in range(3)]
    for budget, most in ((0, 2**20), (64 * 2**20, 70 * 2**20)):
        tracemalloc.start()
        store = CertificateStore(memory_budget=budget)
        for k in range(100):  # copies of three certificates, 1.2 MB each, under 100 keys
            cert = made[k % 3]
            store.add(k, Certificate(cert.support.copy(), cert.weights.copy(), cert.kind,
                                     cert.residual, cert.bound))
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if budget == 0:
            assert held < most and store.bytes_on_disk == 120 * 10**6
        else:
            assert 60 * 2**20 < held < most  # the budget's worth of certificate objects
        assert same(store[99], made[0])


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_audit_with_every_certificate_on_disk_is_the_audit_in_memory(monkeypatch, jobs):
    weight = head_with_interior_rows(4)
    twins = np.vstack([weight, weight[300:303]])  # duplicates: certificates remapped to the head
    for head in (weight, twins):
        in_memory = check_argmaxable(head, jobs=jobs, show_progress=False)
        monkeypatch.setattr(evidence_store, "MEMORY_BUDGET", 0)
        on_disk = check_argmaxable(head, jobs=jobs, show_progress=False)
        monkeypatch.undo()
        assert in_memory.certificates.bytes_on_disk == 0 and len(in_memory.certificates) >= 20
        assert on_disk.certificates.bytes_in_memory == 0
        assert list(on_disk.certificates) == list(in_memory.certificates)
        for k, cert in in_memory.certificates.items():
            assert same(on_disk.certificates[k], cert)
        assert on_disk.status.tolist() == in_memory.status.tolist()
        payload = json.loads(on_disk.to_json(include_evidence=True))
        assert payload == json.loads(in_memory.to_json(include_evidence=True)) | {
            "timings": payload["timings"]}
    rows = twins.astype(np.float64)  # each certificate read back still combines to its class
    for k, cert in on_disk.certificates.items():
        assert k not in cert.support.tolist()
        if cert.kind == "depth":
            others = np.unique(np.delete(rows, k, axis=0), axis=0)
            target = rows[k] + on_disk.settings["tol"] * (rows[k] - others.mean(0))
            size = cert.weights @ np.abs(rows[k] - rows[cert.support]).sum(1)
            assert np.abs(cert.weights @ rows[cert.support] - target).sum() <= \
                1.01 * on_disk.settings["tol"] / 64 * size


def test_merged_shares_keep_their_certificates_on_disk(monkeypatch):
    weight = head_with_interior_rows(6)
    whole = check_argmaxable(weight, show_progress=False)
    monkeypatch.setattr(evidence_store, "MEMORY_BUDGET", 0)
    parts = [check_argmaxable(weight, classes=split_classes(np.arange(len(weight)), r, 2),
                              show_progress=False) for r in range(2)]
    merged = merge_results(parts, np.arange(len(weight)))
    assert merged.certificates.bytes_in_memory == 0 and merged.certificates.bytes_on_disk > 0
    assert list(merged.certificates) == list(whole.certificates)
    for part in parts:  # (the shares' batched products may round unlike the whole audit's)
        for k, cert in part.certificates.items():
            assert same(merged.certificates[k], cert)


def test_rows_come_back_as_float32_from_disk_with_reads_between_additions():
    rng = np.random.default_rng(5)
    store, kept = RowStore(37), {}
    for key in rng.permutation(500)[:300].tolist():
        row = rng.normal(size=37)  # float64 in: kept rounded to float32
        store.add(key, row)
        kept[key] = row.astype(np.float32)
        probe = int(rng.choice(list(kept)))
        assert np.array_equal(store.get(probe), kept[probe])  # moves the file's position
    assert len(store) == 300 and store.bytes_on_disk == 300 * 37 * 4
    for key, row in kept.items():
        back = store.get(key)
        assert back.dtype == np.float32 and np.array_equal(back, row)
    assert store.get(10_000) is None and RowStore(3).get(0) is None


def test_a_row_is_held_once_and_has_the_stores_width():
    store = RowStore(4)
    store.add(1, np.ones(4))
    with pytest.raises(KeyError, match="already held"):
        store.add(1, np.zeros(4))
    with pytest.raises(ValueError, match="4 numbers"):
        store.add(2, np.ones(5))
    assert store.get(1).tolist() == [1.0] * 4


def test_rows_on_disk_are_not_held_in_memory():
    rows = np.random.default_rng(2).normal(size=(2000, 256)).astype(np.float32)  # 2 MiB
    tracemalloc.start()
    store = RowStore(256)
    for key, row in enumerate(rows):
        store.add(key, row)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held < 0.25 * rows.nbytes  # the offsets only (a dict of 2000 ints)
    assert np.array_equal(store.get(1999), rows[1999])
