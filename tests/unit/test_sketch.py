"""Unit tests for rtmh.windows.sketch: accuracy, exact mergeability, bounds, JSON form."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import msgspec
import pytest
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmh.windows.sketch import (
    GAMMA,
    MAX_BUCKETS,
    MAX_INDEXABLE,
    MIN_INDEXABLE,
    Sketch,
    bucket_estimate,
    bucket_index,
    collapse_lowest,
    is_indexable,
    store_form,
    store_of,
)

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
# the guarantee is 1 %; allow only floating-point slack on top of it
TOLERANCE = 0.01 * (1 + 1e-9)


def exact_quantile(values: list[float], q: float) -> float:
    """The element DDSketch's estimate is measured against: rank floor(q * (n - 1))."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_accurate(values: list[float], qs: tuple[float, ...] = QS) -> None:
    sketch = Sketch()
    sketch.add_all(values)
    for q, estimate in zip(qs, sketch.quantiles(qs), strict=True):
        exact = exact_quantile(values, q)
        assert estimate is not None
        assert abs(estimate - exact) <= TOLERANCE * abs(exact), (q, estimate, exact)


def sketch_of(values: list[float]) -> Sketch:
    sketch = Sketch()
    sketch.add_all(values)
    return sketch


def merged(*sketches: Sketch) -> Sketch:
    result = Sketch()
    for sketch in sketches:
        result.merge(sketch)
    return result


# ------------------------------------------------------------------------------ accuracy


DISTRIBUTIONS: dict[str, Callable[[random.Random], float]] = {
    "lognormal latency ms": lambda r: r.lognormvariate(4.0, 1.0),
    "lognormal wide": lambda r: r.lognormvariate(0.0, 3.0),
    "log-uniform 1e-3..1e6": lambda r: 10 ** r.uniform(-3, 6),
    "uniform cpu percent": lambda r: r.uniform(0.0, 100.0),
    "exponential": lambda r: r.expovariate(0.01),
    "pareto heavy tail": lambda r: r.paretovariate(1.2),
    "normal around zero": lambda r: r.gauss(0.0, 50.0),
    "negative lognormal": lambda r: -r.lognormvariate(2.0, 1.0),
    "zeros and values": lambda r: 0.0 if r.random() < 0.3 else r.lognormvariate(1.0, 1.0),
    "integers": lambda r: float(r.randint(1, 20)),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_quantiles_within_one_percent(name: str) -> None:
    rng = random.Random(name)
    values = [DISTRIBUTIONS[name](rng) for _ in range(50_000)]
    assert_accurate(values)


def test_values_spanning_1e_minus_3_to_1e6_endpoints() -> None:
    values = [1e-3, 2e-3, 0.5, 1.0, 7.0, 1e3, 999_999.0, 1e6]
    assert_accurate(values)
    # ~1040 buckets cover nine decades: far below the collapse bound
    assert bucket_index(1e6) - bucket_index(1e-3) < 1100


def test_constant_value() -> None:
    assert_accurate([123.456] * 1000)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.just(0.0),
            st.floats(min_value=1e-300, max_value=1e300),
            st.floats(min_value=-1e300, max_value=-1e-300),
        ),
        min_size=1,
        max_size=300,
    )
)
def test_any_values_within_one_percent(values: list[float]) -> None:
    assert_accurate(values)


def test_empty_sketch_and_invalid_q() -> None:
    sketch = Sketch()
    assert sketch.count == 0
    assert sketch.quantile(0.5) is None
    sketch.add(3.0)
    assert sketch.quantile(-0.1) is None
    assert sketch.quantile(1.5) is None
    assert sketch.quantile(0.5) == pytest.approx(3.0, rel=0.01)


# ------------------------------------------------------------------------------ DDSketch parity


def test_mapping_matches_ddsketch_logarithmic_mapping() -> None:
    mapping = LogarithmicMapping(0.01)
    assert mapping.gamma == pytest.approx(GAMMA, rel=1e-15)
    for key in range(-2000, 2001, 7):
        assert bucket_estimate(key) == pytest.approx(mapping.value(key), rel=1e-12)
    rng = random.Random(5)
    values = [10 ** rng.uniform(-6, 9) for _ in range(20_000)]
    # the two log formulas may round differently exactly on a bucket edge; nowhere else
    mismatches = sum(bucket_index(v) != mapping.key(v) for v in values)
    assert mismatches <= 2


def test_quantile_estimate_is_ddsketchs() -> None:
    rng = random.Random(11)
    values = [rng.choice((-1.0, 1.0)) * rng.lognormvariate(1.0, 2.0) for _ in range(5000)]
    values += [0.0] * 300
    mapping = LogarithmicMapping(0.01)
    assert all(bucket_index(abs(v)) == mapping.key(abs(v)) for v in values if v)
    reference = DDSketch(0.01)
    for value in values:
        reference.add(value)
    ours = sketch_of(values)
    for i in range(101):
        q = i / 100
        assert ours.quantile(q) == pytest.approx(reference.get_quantile_value(q), rel=1e-12)


# ------------------------------------------------------------------------------ merging

finite_values = st.lists(
    st.one_of(
        st.just(0.0),
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False),
    ),
    max_size=60,
)


@given(finite_values, finite_values, finite_values)
def test_merge_is_associative_commutative_and_exact(
    a: list[float], b: list[float], c: list[float]
) -> None:
    sa, sb, sc = sketch_of(a), sketch_of(b), sketch_of(c)
    whole = sketch_of(a + b + c)
    assert merged(merged(sa, sb), sc) == whole
    assert merged(sa, merged(sb, sc)) == whole
    assert merged(sc, sa, sb) == whole
    assert whole.count == len(a) + len(b) + len(c)
    # merge leaves its argument alone
    assert sa == sketch_of(a)


def test_merge_into_empty_and_copy() -> None:
    source = sketch_of([1.0, 2.0, -3.0, 0.0])
    target = Sketch()
    target.merge(source)
    assert target == source
    clone = source.copy()
    clone.add(5.0)
    assert clone != source


# ------------------------------------------------------------------------------ bucket bound

store_strategy = st.dictionaries(
    st.integers(min_value=-50, max_value=50), st.integers(min_value=1, max_value=9), max_size=20
)


def _added(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    out = dict(a)
    for key, count in b.items():
        out[key] = out.get(key, 0) + count
    return out


def _collapsed(store: dict[int, int], limit: int) -> dict[int, int]:
    out = dict(store)
    collapse_lowest(out, limit)
    return out


@given(store_strategy, store_strategy, st.integers(min_value=1, max_value=8))
def test_collapse_commutes_with_merge(a: dict[int, int], b: dict[int, int], limit: int) -> None:
    # what makes bounded merges exactly associative: folding early changes nothing
    assert _collapsed(_added(_collapsed(a, limit), b), limit) == _collapsed(_added(a, b), limit)


@given(store_strategy, st.integers(min_value=1, max_value=8))
def test_collapse_keeps_highest_keys_and_total(store: dict[int, int], limit: int) -> None:
    out = _collapsed(store, limit)
    assert len(out) == min(len(store), limit)
    assert sum(out.values()) == sum(store.values())
    top = sorted(store, reverse=True)[: limit - 1]
    assert all(out[k] == store[k] for k in top)


def test_sketch_bucket_bound_and_tail_accuracy() -> None:
    # 3000 distinct buckets: beyond the bound, so the lowest ones fold
    values = [GAMMA ** (k - 0.5) for k in range(-1500, 1500)]
    whole = sketch_of(values)
    assert len(whole.pos) == MAX_BUCKETS
    assert whole.count == len(values)
    halves = merged(sketch_of(values[::2]), sketch_of(values[1::2]))
    assert halves == whole
    reverse = sketch_of(values[::-1])
    assert reverse == whole
    for q in (0.5, 0.9, 0.99, 1.0):  # the folded third is below these
        exact = exact_quantile(values, q)
        estimate = whole.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) <= TOLERANCE * exact


# ------------------------------------------------------------------------------ add / range


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, MAX_INDEXABLE * 2])
def test_add_refuses_values_without_a_bucket(bad: float) -> None:
    assert not is_indexable(bad)
    with pytest.raises(ValueError, match="cannot add"):
        Sketch().add(bad)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.just(0.0),
                st.floats(-1e300, 1e300, allow_nan=False),
                st.floats(-MAX_INDEXABLE, MAX_INDEXABLE),
            ),
            st.integers(1, 200),
        ),
        max_size=20,
    )
)
def test_a_weighted_add_equals_count_unit_adds(pairs: list[tuple[float, int]]) -> None:
    # a histogram bucket enters the sketch as add(value, count)
    weighted, units = Sketch(), Sketch()
    for value, count in pairs:
        weighted.add(value, count)
        for _ in range(count):
            units.add(value)
    assert weighted == units
    assert weighted.to_json() == units.to_json()
    # counts stay integers in the stored JSON, so SQL's bigint merge stays exact: the typed
    # decode refuses anything else (a float weight would have been written as 1.0)
    assert Sketch.from_json(weighted.to_json()) == weighted
    stores = (weighted.pos, weighted.neg)
    assert all(type(c) is int for store in stores for c in store.values())
    assert type(weighted.to_json_obj()["z"]) is int


@pytest.mark.parametrize("bad", [0, -3, 2.0, 1.0, 1.5, True, None])
def test_add_refuses_counts_that_are_not_positive_ints(bad: object) -> None:
    sketch = Sketch()
    with pytest.raises(ValueError, match="count must be an int"):
        sketch.add(1.0, bad)  # type: ignore[arg-type]
    assert sketch == Sketch()


def test_extremes_and_near_zero() -> None:
    sketch = sketch_of([MAX_INDEXABLE, -MAX_INDEXABLE, MIN_INDEXABLE / 2, -0.0, 1e-300])
    assert sketch.zero == 2
    top = sketch.quantile(1.0)
    assert top is not None and math.isfinite(top)
    assert top == pytest.approx(MAX_INDEXABLE, rel=0.01)


# ------------------------------------------------------------------------------ JSON form


def test_json_round_trip_and_shape() -> None:
    sketch = sketch_of([0.0, 1.0, 1.0, 250.0, -2.0, -2.05, -2.2])
    obj = sketch.to_json_obj()
    assert set(obj) == {"p", "n", "z"}
    assert obj["z"] == 1
    # two buckets 279 keys apart: a dense string would be mostly zeros, so the store is sparse
    assert obj["p"] == {str(bucket_index(1.0)): 2, str(bucket_index(250.0)): 1}
    # neighbouring buckets: one string of counts from the lowest key, empty buckets as 0
    low = bucket_index(2.0)
    assert [bucket_index(2.05) - low, bucket_index(2.2) - low] == [1, 5]
    assert obj["n"] == [low, "1,1,0,0,0,1"]
    decoded = msgspec.json.decode(msgspec.json.encode(obj))
    assert Sketch.from_json_obj(decoded) == sketch
    assert Sketch.from_json(sketch.to_json()) == sketch


@pytest.mark.parametrize(
    ("store", "form"),
    [
        ({}, {}),
        ({7: 3}, (7, "3")),
        ({-2: 1, 0: 4}, (-2, "1,0,4")),
        # span 4 times the non-empty buckets: still dense; one more: sparse
        ({0: 1, 7: 1}, (0, "1,0,0,0,0,0,0,1")),
        ({0: 1, 8: 1}, {0: 1, 8: 1}),
    ],
)
def test_a_store_is_dense_while_its_keys_are_close(store: dict[int, int], form: object) -> None:
    assert store_form(store) == form
    assert store_of(store_form(store)) == store


def test_a_dense_store_leaves_its_empty_buckets_out_when_read() -> None:
    assert store_of((5, "2,0,0,1")) == {5: 2, 8: 1}
    assert store_of((5, "0")) == {}
    with pytest.raises(ValueError):
        store_of((5, "1,x"))
    with pytest.raises(ValueError):
        store_of((5, "1.5"))


def test_the_shape_written_before_dense_stores_is_still_read() -> None:
    # rows stored before migration 010 hold objects only
    old = '{"p": {"3": 2, "9": 1}, "n": {"-4": 5}, "z": 1}'
    sketch = Sketch.from_json(old)
    assert (sketch.pos, sketch.neg, sketch.zero) == ({3: 2, 9: 1}, {-4: 5}, 1)
    assert Sketch.from_json(sketch.to_json()) == sketch


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-MAX_INDEXABLE, max_value=MAX_INDEXABLE, allow_nan=False),
            st.floats(min_value=0.5, max_value=2000.0),  # close buckets: dense stores
        ),
        max_size=300,
    )
)
def test_json_round_trip_in_either_store_shape(values: list[float]) -> None:
    sketch = sketch_of(values)
    assert Sketch.from_json(sketch.to_json()) == sketch
    assert Sketch.from_json_obj(msgspec.json.decode(sketch.to_json())) == sketch
    assert msgspec.json.decode(sketch.to_json()) == sketch.to_json_obj()


def test_from_json_obj_tolerates_missing_parts() -> None:
    assert Sketch.from_json_obj({}) == Sketch()
    assert Sketch.from_json_obj({"p": {"3": 2}}).count == 2
    assert Sketch.from_json_obj({"p": None, "n": None, "z": None}) == Sketch()


def test_json_is_compact_for_a_latency_window() -> None:
    rng = random.Random(3)
    sketch = sketch_of([rng.lognormvariate(4.0, 0.8) for _ in range(10_000)])
    encoded = msgspec.json.encode(sketch.to_json_obj())
    # under PostgreSQL's 2 kB, past which every write of the row is pglz-compressed
    assert len(encoded) < 1200
