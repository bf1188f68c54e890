"""The response's fingerprint: positional, and the same whether the rows are in one array or in chunks."""

from __future__ import annotations

from functools import reduce

import numpy as np

from lmmbayes.design import fingerprint as dist


def test_response_fingerprint_is_positional_and_chunk_invariant():
    """The fingerprint of a response: chunks combine to the whole, any change of value or order shows."""
    rng = np.random.default_rng(4)
    y = rng.normal(size=10_007) * 1e3
    whole = dist.ResponseHash.of(y)
    for cuts in ([5000], [1, 2, 4096, 9000], list(range(0, 10_007, 997))):
        parts = [dist.ResponseHash.of(c) for c in np.split(y, cuts)]
        assert reduce(lambda a, b: a + b, parts) == whole
    # witness: the same polynomial hash in Python integers
    bits = y[:300].view(np.uint64)
    want = tuple(sum(int(v) * pow(dist._HASH_BASE, 299 - i, p) for i, v in enumerate(bits)) % p
                 for p in dist._HASH_PRIMES)
    assert dist.ResponseHash.of(y[:300]).h == want
    swapped = y.copy()
    swapped[[10, 11]] = swapped[[11, 10]]
    nudged = y.copy()
    nudged[5000] = np.nextafter(nudged[5000], np.inf)
    texts = {dist.response_fingerprint(v) for v in (y, swapped, nudged, y[:-1], np.append(y, 0.0))}
    assert len(texts) == 5
    assert dist.response_fingerprint(y) == dist.response_fingerprint(y.copy())
