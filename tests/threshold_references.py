"""Independent references for the class-weight tests: loops and exact fractions, no logitkit."""

import itertools
from fractions import Fraction

import numpy as np


def naive_accuracy(labels, preds, weights=None):
    weights = [1.0] * len(labels) if weights is None else weights
    hits = sum(w for a, b, w in zip(labels, preds, weights, strict=True) if a == b)
    return hits / sum(weights)


def naive_macro_f1(labels, preds, n, weights=None):
    """Mean F1 over the classes present in labels."""
    weights = [1.0] * len(labels) if weights is None else weights
    rows = list(zip(labels, preds, weights, strict=True))
    total, present = 0.0, 0
    for c in range(n):
        actual = sum(w for a, _, w in rows if a == c)
        if actual == 0:
            continue
        present += 1
        tp = sum(w for a, b, w in rows if a == c and b == c)
        total += 2 * tp / (sum(w for _, b, w in rows if b == c) + actual)
    return total / present


def naive_binary_f1(labels, preds):
    tp = sum(1 for a, b in zip(labels, preds, strict=True) if a == 1 and b == 1)
    denominator = sum(preds) + sum(labels)
    return 2 * tp / denominator if denominator else 0.0


def naive_predict(probs, weights):
    """argmax_j probs[i, j] * weights[j], ties to the lowest index, with explicit loops."""
    preds = []
    for row in probs:
        best, best_score = 0, row[0] * weights[0]
        for j in range(1, len(row)):
            if row[j] * weights[j] > best_score:
                best, best_score = j, row[j] * weights[j]
        preds.append(best)
    return preds


def naive_score(labels, preds, n, metric, weights=None):
    if metric == "accuracy":
        return naive_accuracy(labels, preds, weights)
    return naive_macro_f1(labels, preds, n, weights)


def naive_metric(probs, labels, weights, metric, sample_weight=None):
    probs = np.asarray(probs, dtype=float).tolist()
    labels = np.asarray(labels).tolist()
    preds = naive_predict(probs, np.asarray(weights, dtype=float).tolist())
    return naive_score(labels, preds, len(probs[0]), metric, sample_weight)


def brute_force_optimum(scores, labels, metric, box=None, zeros=True):
    """Best metric over EVERY decision vector that some weights w >= 0 produce (``zeros=False``:
    w > 0 only). ``metric``: a name of ``naive_score`` or a function ``f(labels, preds)``. A
    weight vector with zeros on the classes outside a support S decides like positive weights on
    the scores with those columns set to 0 (a row whose products are all 0 goes to class 0), so
    the closed space is the union over supports of positive problems.

    ``scores``: non-negative numbers, taken as exact fractions (integers stay integers).
    Decisions ``pred`` come from weights w > 0 iff ``w_a > R_ab w_b`` for all a != b, with
    ``R_ab = max over rows predicted a of s_ib / s_ia`` (ties to the lowest index are limits of
    such strict decisions), iff every cycle of R has a product < 1: Floyd-Warshall on
    max-products of exact fractions. ``box``: also ``w_a <= box * w_b`` (R_ab at least 1/box).
    A depth-first search over the rows keeps only prefixes that some weights produce. An
    all-zero row is predicted 0 by any weights.
    """
    rows = [[int(x) if float(x).is_integer() else Fraction(float(x)) for x in row]
            for row in scores]
    labels = [int(x) for x in labels]
    n = len(rows[0])

    def bigger(x, y):  # fractions (numerator, denominator > 0)
        return x[0] * y[1] > y[0] * x[1]

    def feasible(ratios):
        closure = [r[:] for r in ratios]
        for k in range(n):
            for a in range(n):
                for b in range(n):
                    through = (closure[a][k][0] * closure[k][b][0],
                               closure[a][k][1] * closure[k][b][1])
                    if bigger(through, closure[a][b]):
                        closure[a][b] = through
        return all(closure[a][a][0] < closure[a][a][1] for a in range(n))

    best = [-1.0]

    def search(i, ratios, preds):
        if i == len(rows):
            value = (metric(labels, preds) if callable(metric)
                     else naive_score(labels, preds, n, metric))
            best[0] = max(best[0], value)
            return
        row = rows[i]
        if not any(row):
            search(i + 1, ratios, preds + [0])
            return
        for a in range(n):
            if row[a] == 0:
                continue
            grown = [r[:] for r in ratios]
            for b in range(n):
                if b != a and bigger((row[b], row[a]), grown[a][b]):
                    grown[a][b] = (row[b], row[a])
            if feasible(grown):
                search(i + 1, grown, preds + [a])

    floor = (0, 1) if box is None else (1, box)
    supports = [range(n)] if not zeros else [
        chosen for size in range(1, n + 1) for chosen in itertools.combinations(range(n), size)]
    everything = rows
    for support in supports:
        rows = [[x if c in support else 0 for c, x in enumerate(row)] for row in everything]
        search(0, [[floor] * n for _ in range(n)], [])
    return best[0]


def integer_problem(seed, n, size, high):
    """Integer scores in [0, high) (small high: many ties and zeros) and labels covering 0..n-1."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(n), rng.integers(0, n, size - n)])
    rng.shuffle(labels)
    return rng.integers(0 if high <= 10 else 1, high, size=(size, n)), labels


def random_problem(seed, *, n=None, size=None, rounded=False):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 6)) if n is None else n
    size = int(rng.integers(n + 5, 40)) if size is None else size
    labels = np.concatenate([np.arange(n), rng.integers(0, n, size - n)])
    probs = rng.dirichlet(np.ones(n), size=size)
    if rounded:  # many tied breakpoints, duplicate rows and zero probabilities
        probs = np.round(probs, 1)
    return probs, labels
