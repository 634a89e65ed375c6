"""`doc.update(fn)` from many threads: group commit batches the calls, and every call
still behaves as it would alone (issue 13's speed work reuses one batch's Python
objects from one function to the next; these tests hold it to the semantics).

Each test forms one batch deterministically: a `with doc.update()` block holds the
document while the calls queue one by one (each seen in `Doc.queued()` before the
next starts); when the block ends, the queued calls join its batch in order."""

from __future__ import annotations

import collections
import copy
import decimal
import enum
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest

import statefile


class Outcome:
    def __init__(self) -> None:
        self.result: Any = None
        self.error: BaseException | None = None


def one_batch(path: Path, fns: list[Callable[[Any], Any]]) -> tuple[list[Outcome], statefile.Receipt]:
    """Run `doc.update(fn)` for each of `fns`, each in its own thread, queued in this
    order behind a held block, so that they form one batch with it."""
    outcomes = [Outcome() for _ in fns]

    def call(fn: Callable[[Any], Any], out: Outcome) -> None:
        try:
            out.result = statefile.Doc(path).update(fn)
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            out.error = e

    watcher = statefile.Doc(path)
    held = statefile.Doc(path).update()
    threads = []
    with held:
        for i, (fn, out) in enumerate(zip(fns, outcomes)):
            t = threading.Thread(target=call, args=(fn, out))
            t.start()
            threads.append(t)
            deadline = time.monotonic() + 60
            while watcher.queued() < i + 1:
                assert time.monotonic() < deadline, "the call did not queue"
                time.sleep(0.002)
    for t in threads:
        t.join()
    assert held.receipt is not None
    return outcomes, held.receipt


def test_each_function_of_a_batch_sees_what_the_ones_before_it_did(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})
    seen: list[list[int]] = []

    def fn(i: int) -> Callable[[Any], int]:
        def change(d: Any) -> int:
            seen.append(list(d["items"]))
            d["items"].append(i)
            return len(d["items"])

        return change

    outcomes, receipt = one_batch(p, [fn(i) for i in range(8)])
    assert receipt.batch == 9, "the held block and the eight calls shared one write"
    assert [o.error for o in outcomes] == [None] * 8
    assert [o.result for o in outcomes] == list(range(1, 9))
    assert seen == [list(range(i)) for i in range(8)], "serial order: each saw the earlier ones"
    assert statefile.Doc(p).read() == {"items": list(range(8))}


def test_a_function_that_raises_mid_batch_fails_alone_and_leaves_no_trace(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})
    seen: list[Any] = []

    def ok(i: int) -> Callable[[Any], None]:
        def change(d: Any) -> None:
            seen.append(copy.deepcopy(d))
            d["items"].append(i)

        return change

    def bad(d: Any) -> None:
        d["items"].append("half")
        d["items"][0] = "overwritten"
        d["poison"] = True
        raise LookupError("refused by the business rule")

    outcomes, receipt = one_batch(p, [ok(0), ok(1), bad, ok(3), ok(4)])
    assert isinstance(outcomes[2].error, LookupError)
    frames = [f.name for f in traceback.extract_tb(outcomes[2].error.__traceback__)]
    assert "bad" in frames, "the exception keeps the function's frame in its traceback"
    assert [o.error for i, o in enumerate(outcomes) if i != 2] == [None] * 4
    assert seen[2] == {"items": [0, 1]}, "the call after it saw nothing of its changes"
    assert receipt.batch == 5
    assert statefile.Doc(p).read() == {"items": [0, 1, 3, 4]}


def test_a_value_json_cannot_hold_fails_only_the_call_that_made_it(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})
    seen: list[Any] = []

    def stores_a_set(d: Any) -> None:
        d["items"].append(2)
        d["tags"] = {"a", "b"}

    def after(d: Any) -> None:
        seen.append(copy.deepcopy(d))
        d["items"].append(3)

    outcomes, _ = one_batch(
        p, [lambda d: d["items"].append(1), stores_a_set, after, lambda d: d["items"].append(4)]
    )
    assert isinstance(outcomes[1].error, TypeError)
    assert "/tags" in str(outcomes[1].error) and "set" in str(outcomes[1].error)
    assert seen == [{"items": [1]}]
    assert statefile.Doc(p).read() == {"items": [1, 3, 4]}


def test_what_a_function_returns_is_its_callers_own(tmp_path: Path) -> None:
    # A function may return the value it was given, or part of it: the caller gets
    # the value as its own change left it, whatever later calls of the batch do.
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})

    def whole(d: Any) -> Any:
        d["items"].append(0)
        return d

    def part(d: Any) -> Any:
        d["items"].append(1)
        return d["items"]

    def replacement(d: Any) -> Any:
        return {"replacement": True}  # returned to its caller, never written

    def last(d: Any) -> None:
        d["items"].append(3)
        d["last"] = True

    outcomes, _ = one_batch(p, [whole, part, replacement, last])
    assert [o.error for o in outcomes] == [None] * 4
    assert outcomes[0].result == {"items": [0]}
    assert outcomes[1].result == [0, 1]
    assert outcomes[2].result == {"replacement": True}
    assert outcomes[3].result is None
    assert statefile.Doc(p).read() == {"items": [0, 1, 3], "last": True}


def test_a_reference_a_function_keeps_cannot_reach_the_next_calls_value(tmp_path: Path) -> None:
    # Regression guard for reusing one batch's Python objects between its functions:
    # objects something else refers to are never handed to the next function.
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": [], "meta": {"n": 0}})
    kept: list[Any] = []

    def keeps(d: Any) -> None:
        d["items"].append(0)
        kept.append(d["meta"])

    def keeps_all(d: Any) -> None:
        d["items"].append(1)
        kept.append(d)

    def meddles(d: Any) -> None:
        kept[0]["n"] = "changed through a kept reference"
        kept[0]["evil"] = True
        d["items"].append(2)

    def meddles_again(d: Any) -> None:
        kept[1]["evil"] = True
        kept[1]["items"].append("evil")
        d["items"].append(3)

    outcomes, _ = one_batch(p, [keeps, meddles, keeps_all, meddles_again])
    assert [o.error for o in outcomes] == [None] * 4
    assert statefile.Doc(p).read() == {"items": [0, 2, 1, 3], "meta": {"n": 0}}


def test_the_next_function_gets_what_json_reads_back(tmp_path: Path) -> None:
    # Objects of other types than JSON reads back (a tuple, a dict or str subclass,
    # an IntEnum, a Decimal, one list twice) reach the next call as JSON values.
    p = tmp_path / "a.json"
    statefile.Doc(p).write({})
    shared = [1]

    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    def stores(d: Any) -> None:
        d["tuple"] = (1, 2)
        d["ordered"] = collections.OrderedDict(a=1)
        d["enum"] = Color.RED
        d["name"] = Name("x")
        d[Name("key")] = 1
        d["decimal"] = decimal.Decimal("0.5")
        d["twice"] = [shared, shared]

    seen: dict[str, Any] = {}

    def looks(d: Any) -> None:
        seen.update(
            {
                "tuple": type(d["tuple"]),
                "ordered": type(d["ordered"]),
                "enum": type(d["enum"]),
                "name": type(d["name"]),
                "key": [type(k) for k in d if k == "key"],
                "decimal": type(d["decimal"]),
                "twice": d["twice"][0] is d["twice"][1],
            }
        )
        d["twice"][0].append(2)

    outcomes, _ = one_batch(p, [stores, looks])
    assert [o.error for o in outcomes] == [None] * 2
    assert seen == {
        "tuple": list,
        "ordered": dict,
        "enum": int,
        "name": str,
        "key": [str],
        "decimal": float,
        "twice": False,
    }
    assert statefile.Doc(p).read()["twice"] == [[1, 2], [1]]
    assert shared == [1]


def test_a_batch_hands_its_objects_from_one_function_to_the_next(tmp_path: Path) -> None:
    # The point of the fast path: when nothing else refers to the value a function
    # left, the next function of the batch gets those very objects instead of the
    # whole document converted to Python again.
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})
    marker = float("1.5e300")
    same: list[bool] = []

    def fn(d: Any) -> None:
        same.append(d.get("m") is marker)
        d["m"] = marker
        d["items"].append(len(same))

    outcomes, _ = one_batch(p, [fn, fn, fn])
    assert [o.error for o in outcomes] == [None] * 3
    assert same == [False, True, True]
    assert statefile.Doc(p).read() == {"items": [1, 2, 3], "m": 1.5e300}


def test_threads_with_slow_functions_lose_nothing_and_apply_nothing_twice(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    doc = statefile.Doc(p, backups=0)
    threads, per_thread = 16, 25
    calls: collections.Counter[str] = collections.Counter()
    mutex = threading.Lock()

    def worker(t: int) -> None:
        for i in range(per_thread):
            item = f"{t}-{i}"

            def change(d: Any, item: str = item, i: int = i) -> None:
                with mutex:
                    calls[item] += 1
                if i % 5 == 0:
                    time.sleep(0.003)  # a slow function: the batch waits for it
                d["items"].append(item)
                if i % 7 == 3:
                    raise KeyError(item)  # and a failing one: nothing of it is kept

            try:
                doc.update(change, default=lambda: {"items": []})
            except KeyError:
                pass

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    items = doc.read()["items"]
    expected = {f"{t}-{i}" for t in range(threads) for i in range(per_thread) if i % 7 != 3}
    assert len(items) == len(set(items)), "no change applied twice"
    assert set(items) == expected, "every successful change kept, no failed one"
    assert set(calls.values()) == {1}, "every function ran exactly once"


def test_keyboard_interrupt_in_a_batched_function_reaches_its_caller(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})

    def interrupted(d: Any) -> None:
        d["items"].append("never")
        raise KeyboardInterrupt

    outcomes, _ = one_batch(
        p, [lambda d: d["items"].append(1), interrupted, lambda d: d["items"].append(3)]
    )
    assert isinstance(outcomes[1].error, KeyboardInterrupt)
    assert outcomes[0].error is None and outcomes[2].error is None
    assert statefile.Doc(p).read() == {"items": [1, 3]}


@pytest.mark.parametrize("form", ["function", "block"])
def test_calls_after_a_batch_start_from_what_it_wrote(tmp_path: Path, form: str) -> None:
    # A batch's objects never outlive it: the next call reads the file again.
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})
    one_batch(p, [lambda d: d["items"].append(1), lambda d: d["items"].append(2)])
    (p).write_text('{"items": ["from another program"]}\n')
    if form == "function":
        statefile.Doc(p).update(lambda d: d["items"].append(3))
    else:
        with statefile.Doc(p).update() as d:
            d["items"].append(3)
    assert statefile.Doc(p).read() == {"items": ["from another program", 3]}


def test_a_batch_writes_the_same_bytes_as_a_lone_write_of_its_value(tmp_path: Path) -> None:
    # The batch's last value is written as the text one walk of its Python objects
    # made (no JSON value built): the file must be byte for byte what writing the same
    # value alone gives.
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})
    value = {
        "ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**80), 10**40],
        "floats": [0.1, -0.0, 1e300, 5e-324, 1.0, 123456.789, 2.5e-8],
        "strings": ["", "plain", 'quote " backslash \\ slash /', "tab\tnl\n\x00\x1f", "é 中 😀"],
        "nested": {"a": {"b": [True, False, None, {"c": []}]}, "": {}, "[]": [[], [[]]]},
        'key "quoted" \\ \n': {"\u2028\x7f": ["\\u0041", "a,b:c{d}[e]"]},
        "more numbers": [1e-7, 1e21, -1.5e-300, 2**100, 0.30000000000000004],
    }

    def first(d: Any) -> None:
        d.update(copy.deepcopy(value))

    def second(d: Any) -> None:
        d["items"].append("second")

    outcomes, _ = one_batch(p, [first, second])
    assert [o.error for o in outcomes] == [None] * 2
    alone = tmp_path / "alone.json"
    statefile.Doc(alone).write(dict({"items": ["second"]}, **value))
    assert p.read_bytes() == alone.read_bytes()
