"""serving.index.params.choose_params: IVF-PQ parameters that Faiss can train."""

from __future__ import annotations

import re

import pytest

from serving.index.params import MIN_POINTS_PER_LIST, IvfPqParams, choose_params

SIZES = [2, 3, 10, 38, 39, 40, 77, 78, 100, 255, 256, 257, 1_000, 2_000, 10_000, 1_682, 10**6]
DIMS = [2, 3, 7, 8, 16, 32, 48, 64, 100, 128, 130, 256, 1024]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dim", DIMS)
def test_choose_params_invariants(n: int, dim: int) -> None:
    p = choose_params(n, dim)
    assert 1 <= p.nlist <= max(1, n // MIN_POINTS_PER_LIST)
    assert 1 <= p.m <= 64
    assert dim % p.m == 0
    assert p.m <= max(1, dim // 2)
    assert 1 <= p.nbits <= 8
    assert 2**p.nbits <= n
    assert 1 <= p.nprobe <= p.nlist
    assert p.factory == f"IVF{p.nlist},PQ{p.m}x{p.nbits}"
    assert re.fullmatch(r"IVF\d+,PQ\d+x\d+", p.factory)


@pytest.mark.parametrize(
    ("n", "dim", "expected"),
    [
        (2, 2, IvfPqParams(nlist=1, m=1, nbits=1, nprobe=1)),
        (100, 16, IvfPqParams(nlist=2, m=8, nbits=6, nprobe=2)),
        (2_000, 32, IvfPqParams(nlist=51, m=16, nbits=8, nprobe=14)),
        (1_682, 64, IvfPqParams(nlist=43, m=32, nbits=8, nprobe=13)),
        (10**6, 256, IvfPqParams(nlist=4000, m=64, nbits=8, nprobe=126)),
        (10**6, 7, IvfPqParams(nlist=4000, m=1, nbits=8, nprobe=126)),
    ],
)
def test_choose_params_known_values(n: int, dim: int, expected: IvfPqParams) -> None:
    assert choose_params(n, dim) == expected


def test_nbits_is_eight_once_catalog_can_train_256_centroids() -> None:
    assert choose_params(255, 8).nbits == 7
    assert choose_params(256, 8).nbits == 8
    assert choose_params(10**7, 8).nbits == 8


def test_m_is_largest_divisor_up_to_half_dim() -> None:
    assert choose_params(1000, 48).m == 24
    assert choose_params(1000, 130).m == 26  # 65 would exceed the cap of 64
    assert choose_params(1000, 7).m == 1  # prime dim: one sub-quantizer


def test_factory_string_format() -> None:
    assert IvfPqParams(nlist=64, m=16, nbits=8, nprobe=16).factory == "IVF64,PQ16x8"


@pytest.mark.parametrize("n", [-5, 0, 1])
def test_rejects_fewer_than_two_items(n: int) -> None:
    with pytest.raises(ValueError, match="at least 2 items"):
        choose_params(n, 32)


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_rejects_dim_below_two(dim: int) -> None:
    with pytest.raises(ValueError, match="dimension"):
        choose_params(1000, dim)
