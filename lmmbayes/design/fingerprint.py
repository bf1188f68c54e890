"""A fingerprint of a response, the same whether its rows are in one array or in Dask partitions.

``loo_compare`` uses it to refuse fits of different data, whatever the engine
and wherever the rows were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Two primes below 2**31 (products of two residues fit in uint64) and the base of the hash.
_HASH_PRIMES = (2_147_483_647, 2_147_483_629)
_HASH_BASE = 1_000_003


_HASH_BLOCK = 4096


def _power_table(p: int, count: int) -> np.ndarray:
    out, value = np.empty(count, dtype=np.uint64), 1
    step = pow(_HASH_BASE, _HASH_BLOCK, p)
    for k in range(count):
        out[k] = value
        value = value * step % p
    return out


#: Per prime, _HASH_BASE ** r mod p for r < _HASH_BLOCK.
_SMALL_POWERS = tuple(np.array([pow(_HASH_BASE, r, p) for r in range(_HASH_BLOCK)], dtype=np.uint64)
                      for p in _HASH_PRIMES)


def _powers(exponents: np.ndarray, k: int) -> np.ndarray:
    """``_HASH_BASE ** exponents mod _HASH_PRIMES[k]`` elementwise: B^(jK + r) = (B^K)^j B^r."""
    p = _HASH_PRIMES[k]
    if exponents.size == 0:
        return np.zeros(0, dtype=np.uint64)
    j, r = np.divmod(exponents, _HASH_BLOCK)
    return _power_table(p, int(j.max()) + 1)[j] * _SMALL_POWERS[k][r] % np.uint64(p)


@dataclass(frozen=True)
class ResponseHash:
    """A fingerprint of a response that depends on every value and its position, whatever the chunking.

    ``h = Σ_i v_i B^(n−1−i) mod p`` for two primes ``p``, with ``v_i`` the
    bits of the i-th float64: chunks combine exactly (``h(ab) = h(a) B^len(b)
    + h(b)``), so the response of a Dask frame, hashed partition by partition
    and merged in order, has the fingerprint of the same response in one
    array. ``loo_compare`` uses it to tell fits of different data apart
    (in memory or on Dask, and across the two).
    """

    n: int = 0
    h: tuple[int, int] = (0, 0)

    @classmethod
    def of(cls, y: np.ndarray) -> ResponseHash:
        bits = np.ascontiguousarray(y, dtype=np.float64).view(np.uint64)
        exponents = np.arange(bits.size - 1, -1, -1, dtype=np.int64)
        h = []
        for k, p in enumerate(_HASH_PRIMES):
            terms = (bits % np.uint64(p)) * _powers(exponents, k) % np.uint64(p)
            h.append(int(terms.sum(dtype=np.uint64) % np.uint64(p)))  # n < 2**33 terms below 2**31
        return cls(int(bits.size), (h[0], h[1]))

    def __add__(self, other: ResponseHash) -> ResponseHash:
        h = tuple((a * pow(_HASH_BASE, other.n, p) + b) % p for a, b, p in zip(self.h, other.h, _HASH_PRIMES))
        return ResponseHash(self.n + other.n, (h[0], h[1]))

    @property
    def text(self) -> str:
        return f"rows:{self.n}:{self.h[0]:08x}{self.h[1]:08x}"


def response_fingerprint(y: np.ndarray) -> str:
    """The `ResponseHash` fingerprint of a response held in one array."""
    return ResponseHash.of(y).text


