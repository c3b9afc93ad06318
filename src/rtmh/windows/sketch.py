"""Mergeable quantile sketch for metric windows: DDSketch with a fixed logarithmic mapping.

Role: every metric window carries one of these so p50/p95/p99 stay within 1 % relative error
while partials from any number of batches and workers merge by adding bucket counts. The JSON
form (``to_json_obj``) is what ``metrics_agg.sketch`` stores; migration 003's
``rtmh_sketch_merge`` / ``rtmh_sketch_quantile`` implement the same merge and estimate in SQL.

Mapping (fixed, never configurable: the SQL side hard-codes it too)::

    gamma = (1 + 0.01) / (1 - 0.01)
    x > 0  ->  bucket "p"[ceil(log_gamma(x))]
    x < 0  ->  bucket "n"[ceil(log_gamma(-x))]
    x == 0 (|x| <= MIN_INDEXABLE) -> "z"
    estimate of bucket k = 2 * gamma**k / (gamma + 1)    (the DDSketch estimate)

JSON form: ``{"p": store, "n": store, "z": zero_count}``, each store in one of two shapes:

- dense, ``[k0, "c0,c1,c2,..."]``: the counts of buckets k0, k0+1, ... as one string, zeros
  included. What ``to_json`` writes when the keys span at most DENSE_SPAN times as many buckets
  as are non-empty, which real latencies always do (~1.1 times);
- sparse, ``{"<k>": count, ...}``: for a store whose keys are spread out (the dense string would
  be mostly zeros), and the only shape before migration 010. Both are read everywhere.

Why the dense string: PostgreSQL parses a jsonb object member by member and stores each key
and count as its own entry, so a 260-bucket sketch was ~5 kB of jsonb, over the 2 kB at which
every write is pglz-compressed. As one string it is ~0.9 kB: parsed in one step, never
compressed. Measured on the window merge (630 rows, 252 with a 260-bucket sketch, AMD EPYC):
91-95 -> 49-54 ms a batch, and 1.44 -> 0.93 kB a stored sketch. The counts go through msgspec
as a JSON array with its brackets cut off, which keeps encoding and decoding in C (23 and 19 us
for 280 buckets, against 4 and 12 us for the sparse object: ~6 ms more Python a batch for ~42 ms
less in PostgreSQL).

Bucket bound: each of the two stores keeps at most MAX_BUCKETS (2048) non-empty buckets. Beyond
that, every bucket below the 2048th-highest key is folded into that key (DDSketch's "collapse
lowest"): values nearest zero lose their accuracy first, the tail that alerts look at keeps it.
Folding into the 2048th-highest key of the union is a deterministic function of the multiset of
keys, so collapse(collapse(A) + B) == collapse(A + B): merges stay exactly associative and
commutative, in Python and in SQL alike. 2048 buckets span a factor of gamma**2048 ~ 6e17, so
real data (1e-3 .. 1e6 needs ~1040 buckets) never collapses.

Why hand-written rather than the ``ddsketch`` package (measured here: CPython 3.11, one core,
best of 3; ddsketch = LogCollapsingLowestDenseDDSketch(0.01, 2048), the bounded equivalent):
    add 1M lognormal values:          this 0.17 s            | ddsketch 0.35 s
    merge 1000 sketches (1k values):  this 0.012 s           | ddsketch 0.025 s
    serialise 1000 to the JSON form:  this 0.026 s (2.0 kB)  | ddsketch 0.047 s
    (ddsketch's own protobuf form needs the protobuf package, which is not installed, and its
    dense stores have to be walked through private attributes to produce the sparse JSON.)
The sparse dict is also exactly the JSON shape, so (de)serialisation is a comprehension.

``add(value, count)`` takes an integer weight: a histogram bucket (OTLP explicit or exponential)
enters as ``count`` observations of its representative value, equal to ``count`` unit adds.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import accumulate, compress, repeat
from operator import truediv
from typing import Any

import msgspec

RELATIVE_ACCURACY = 0.01
GAMMA = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
_LN_GAMMA = math.log(GAMMA)
#: values with a smaller magnitude count as zero (as in DDSketch: no log of a subnormal)
MIN_INDEXABLE = sys.float_info.min * GAMMA
#: larger magnitudes are refused: their estimate 2 * gamma**k would overflow, which PostgreSQL's
#: power() and float8 multiplication raise as errors (and would fail a whole batch's merge)
MAX_INDEXABLE = sys.float_info.max / 4
#: per store (positive / negative) bound on non-empty buckets; see the module docstring
MAX_BUCKETS = 2048

#: a store is written dense when its keys span at most this many times its non-empty buckets
DENSE_SPAN = 4

Store = dict[int, int]
#: a store as JSON: sparse (key -> count) or dense ([first key, "count,count,..."])
StoreForm = dict[int, int] | tuple[int, str]

_encode = msgspec.json.Encoder().encode
_decode_counts = msgspec.json.Decoder(list[int]).decode


class _JsonForm(msgspec.Struct):
    """The JSON form, typed: msgspec reads the decimal-string keys straight into ints."""

    p: StoreForm = {}
    n: StoreForm = {}
    z: int = 0


_decode = msgspec.json.Decoder(_JsonForm).decode


def store_form(store: Store) -> StoreForm:
    """A store as ``to_json`` writes it: dense when its keys are close together, else sparse."""
    if not store:
        return store
    low = min(store)
    span = max(store) - low + 1
    if span > DENSE_SPAN * len(store):
        return store
    counts = map(store.get, range(low, low + span), repeat(0))
    return low, _encode(list(counts))[1:-1].decode()


def store_of(form: StoreForm) -> Store:
    """``store_form``'s inverse (empty buckets of a dense store left out). Raises
    ``msgspec.DecodeError`` (a ``ValueError``) when a dense store's counts are not integers."""
    if isinstance(form, dict):
        return form
    low, text = form
    counts = _decode_counts(b"[" + text.encode() + b"]")
    return dict(compress(zip(range(low, low + len(counts)), counts, strict=True), counts))


def is_indexable(value: float) -> bool:
    """Whether ``add`` accepts ``value``: finite and of magnitude at most MAX_INDEXABLE."""
    return -MAX_INDEXABLE <= value <= MAX_INDEXABLE


def bucket_index(magnitude: float) -> int:
    """The bucket of a positive, indexable value: ceil(log_gamma(magnitude))."""
    return math.ceil(math.log(magnitude) / _LN_GAMMA)


def bucket_estimate(index: int) -> float:
    """DDSketch's representative value of a bucket: within 1 % of everything in it."""
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


def collapse_lowest(store: Store, limit: int = MAX_BUCKETS) -> None:
    """Fold the buckets below the ``limit``-th highest key into that key, in place."""
    if len(store) <= limit:
        return
    keys = sorted(store, reverse=True)
    floor_key = keys[limit - 1]
    folded = 0
    for key in keys[limit:]:
        folded += store.pop(key)
    store[floor_key] += folded


def _merge_store(into: Store, other: Mapping[int, int]) -> None:
    for key, count in other.items():
        into[key] = into.get(key, 0) + count
    collapse_lowest(into)


class Sketch:
    """A DDSketch (relative accuracy 0.01) with sparse positive/negative stores and a zero count.

    Counts are integers (``add`` takes an integer weight), so merging is exact and
    order-independent.
    """

    __slots__ = ("neg", "pos", "zero")

    def __init__(self) -> None:
        self.pos: Store = {}
        self.neg: Store = {}
        self.zero: int = 0

    def add(self, value: float, count: int = 1) -> None:
        """Add ``count`` observations of ``value`` (a histogram bucket adds its whole count at
        once). Raises ValueError unless ``is_indexable(value)`` (NaN, +-inf and magnitudes
        beyond MAX_INDEXABLE have no bucket) and unless ``count`` is an int >= 1: counts stay
        integers so merges (and SQL's bigint sums) stay exact."""
        if not -MAX_INDEXABLE <= value <= MAX_INDEXABLE:  # also false for NaN
            raise ValueError(f"cannot add {value!r} to a sketch (not finite or out of range)")
        # exact type: a float or bool weight would be stored as such in the JSON (1.0, true).
        # Measured ~12 ns an add more than skipping the check for count == 1 (timeit), lost in
        # the noise of build_partials over 20,000 records (~27.5 ms either way)
        if type(count) is not int or count < 1:
            raise ValueError(f"a sketch count must be an int >= 1, not {count!r}")
        if value > MIN_INDEXABLE:
            store = self.pos
        elif value < -MIN_INDEXABLE:
            store = self.neg
            value = -value
        else:
            self.zero += count
            return
        key = math.ceil(math.log(value) / _LN_GAMMA)
        if key in store:
            store[key] += count
        else:
            store[key] = count
            # only a new key can push the store over its bound
            if len(store) > MAX_BUCKETS:
                collapse_lowest(store)

    def add_all(self, values: Iterable[float]) -> None:
        """``add(value)`` for each value, in bulk: the same buckets and counts.

        All-positive values (latencies, sizes, most gauges) take a path without a Python loop:
        min/max vet the range, then map(log) -> map(truediv) -> map(ceil) -> Counter run in C.
        Measured (10.5k latency samples, the bench's 20k batch; best of 30): 1.65 ms against
        3.3 ms for a loop of ``add``. Anything else (signs, zeros, a value ``add`` refuses)
        takes a loop of ``add``, so a refused value raises after the ones before it were added.
        """
        values = values if isinstance(values, list) else list(values)
        if not values:
            return
        counts: Counter[int] | None = None
        if min(values) > MIN_INDEXABLE and max(values) <= MAX_INDEXABLE:
            try:
                divisors = repeat(_LN_GAMMA)
                counts = Counter(map(math.ceil, map(truediv, map(math.log, values), divisors)))
            except (ValueError, OverflowError):  # a NaN hidden from min/max by its order
                counts = None
        if counts is None:
            for value in values:
                self.add(value)
            return
        store = self.pos
        if store:
            for key, count in counts.items():
                store[key] = store.get(key, 0) + count
        else:
            self.pos = store = dict(counts)
        # folding once at the end equals folding at each new key (see collapse_lowest)
        collapse_lowest(store)

    def merge(self, other: Sketch) -> None:
        """Add ``other``'s counts into this sketch (``other`` is left unchanged)."""
        _merge_store(self.pos, other.pos)
        _merge_store(self.neg, other.neg)
        self.zero += other.zero

    def copy(self) -> Sketch:
        new = Sketch()
        new.pos = dict(self.pos)
        new.neg = dict(self.neg)
        new.zero = self.zero
        return new

    @property
    def count(self) -> int:
        return sum(self.pos.values()) + sum(self.neg.values()) + self.zero

    def quantile(self, q: float) -> float | None:
        """DDSketch's estimate of the q-quantile (0 <= q <= 1); None when empty or q is invalid.

        Buckets are walked in ascending value order (negatives by descending key, zero, then
        positives by ascending key); the answer is the first bucket whose cumulative count
        exceeds q * (count - 1). That is exactly DDSketch's get_quantile_value, including its
        lower=False rule on the negative store, and what rtmh_sketch_quantile does in SQL.
        """
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        """Several quantiles from one sort of the buckets.

        The running counts come from accumulate and each rank's bucket from bisect_right (the
        first running count > rank), so only the chosen buckets' estimates are computed: p50,
        p95 and p99 of a 171-bucket latency window in 16 us, against 54 us walking every bucket
        with its estimate (partial_rows computes them for every metric window of a batch).
        """
        wanted = list(qs)
        neg_keys = sorted(self.neg, reverse=True)  # ascending value order: -est(k) for k desc
        pos_keys = sorted(self.pos)
        counts = [self.neg[k] for k in neg_keys]
        if self.zero:
            counts.append(self.zero)
        counts += [self.pos[k] for k in pos_keys]
        running = list(accumulate(counts))
        total = running[-1] if running else 0
        if total == 0:
            return [None] * len(wanted)
        pos_base = len(running) - len(pos_keys)
        results: list[float | None] = []
        for q in wanted:
            if not 0.0 <= q <= 1.0:
                results.append(None)
                continue
            i = bisect_right(running, q * (total - 1))
            if i < len(neg_keys):
                results.append(-bucket_estimate(neg_keys[i]))
            elif i < pos_base:  # the zero bucket, between the two stores
                results.append(0.0)
            else:
                results.append(bucket_estimate(pos_keys[i - pos_base]))
        return results

    def to_json_obj(self) -> dict[str, Any]:
        """The JSON object stored in metrics_agg.sketch, as ``json.loads(to_json())`` gives it
        (sparse keys are decimal strings, a dense store is a list)."""
        obj: dict[str, Any] = {"z": self.zero}
        for name, store in (("p", self.pos), ("n", self.neg)):
            form = store_form(store)
            obj[name] = {str(k): c for k, c in form.items()} if isinstance(form, dict) else [*form]
        return obj

    def to_json(self) -> str:
        """The JSON text stored in metrics_agg.sketch (msgspec writes a sparse store's int keys
        as decimal strings itself, which saves building str-keyed copies)."""
        return _encode(
            {"p": store_form(self.pos), "n": store_form(self.neg), "z": self.zero}
        ).decode()

    @classmethod
    def from_json_obj(cls, obj: Mapping[str, Any]) -> Sketch:
        """Inverse of to_json_obj, either store shape; missing parts count as empty (the SQL
        side is null-safe too)."""
        return cls.from_json(_encode({k: v for k, v in obj.items() if v is not None}))

    @classmethod
    def from_json(cls, text: str | bytes) -> Sketch:
        """``to_json``'s inverse, as the worker reads a stored sketch back to merge into it.

        One typed msgspec decode (a sparse 275-bucket window in ~16 us, where ``json.loads``
        plus int conversions took ~94 us; dense, ~19 us). Raises ``msgspec.ValidationError``
        (a ``ValueError``) when the text is not a sketch (keys or counts not integers).
        """
        form = _decode(text)
        return cls._of_stores(store_of(form.p), store_of(form.n), form.z)

    @classmethod
    def _of_stores(cls, pos: Store, neg: Store, zero: int) -> Sketch:
        """A sketch that takes these stores (folded to MAX_BUCKETS, as a merge would)."""
        sketch = cls()
        sketch.pos = pos
        sketch.neg = neg
        sketch.zero = zero
        collapse_lowest(sketch.pos)
        collapse_lowest(sketch.neg)
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sketch):
            return NotImplemented
        return self.pos == other.pos and self.neg == other.neg and self.zero == other.zero

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Sketch(count={self.count}, pos={len(self.pos)} buckets, neg={len(self.neg)})"
