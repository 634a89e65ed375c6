"""A batched `doc.update(fn)` checks and writes each change's value in one walk of its
objects (`convert::encode`), while `doc.write` converts to a JSON value first
(`convert::to_json`). Both walks are one walker: a value a change of a batch leaves is
refused with exactly the error (type, message, JSON Pointer) a lone write of it raises,
before anything is written, and the batch goes on without it."""

from __future__ import annotations

import copy
import math
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pytest

import statefile
from test_batches import one_batch


class K(str):
    """A key whose equal-text twin can sit beside it in one dict."""

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


class Liar(list):  # type: ignore[type-arg]
    """A list that says it is empty."""

    def __len__(self) -> int:
        return 0


def cycle_list() -> Any:
    x: list[Any] = [1]
    x.append(x)
    return x


def cycle_dict() -> Any:
    x: dict[str, Any] = {"a": 1}
    x["me"] = {"again": x}
    return x


def nest(n: int) -> Any:
    v: Any = []
    for _ in range(n - 1):
        v = [v]
    return v


# Each makes a fresh bad value (some are cycles, so not shared between the two writes).
BAD: list[tuple[str, Callable[[], Any]]] = [
    ("nan", lambda: math.nan),
    ("-inf", lambda: [1, 2, 3, -math.inf]),
    ("lone surrogate", lambda: "a \ud800 b"),
    ("lone surrogate in a key", lambda: {"ok": 1, "k \udc00": 2}),
    ("int key", lambda: {"ok": 1, 7: 2}),
    ("tuple key", lambda: {("a",): 1}),
    ("set", lambda: {"a"}),
    ("bytes", lambda: [b"\x00"]),
    ("object", lambda: object()),
    ("Decimal NaN", lambda: Decimal("NaN")),
    ("list cycle", cycle_list),
    ("dict cycle", cycle_dict),
    ("too deep", lambda: nest(200)),
    ("reserved key", lambda: {"$serde_json::private::Number": "12"}),
    ("raw value key", lambda: {"a": [{"$serde_json::private::RawValue": "[1]"}]}),
    ("too many digits", lambda: 10**5000),
    ("same text twice", lambda: {K("k"): 1, K("k"): 2}),
    # The first refusal in iteration order wins: NaN at /a before the int key.
    ("first of two", lambda: {"a": math.nan, 1: "b"}),
]


def lone_error(tmp_path: Path, bad: Any) -> BaseException:
    alone = statefile.Doc(tmp_path / "alone.json")
    with pytest.raises((TypeError, ValueError)) as e:
        alone.write({"items": [], "x": {"y~/z": bad}})
    assert not (tmp_path / "alone.json").exists()
    return e.value


@pytest.mark.parametrize("name,make", BAD, ids=[b[0] for b in BAD])
def test_a_change_refused_in_a_batch_raises_what_a_lone_write_raises(
    tmp_path: Path, name: str, make: Callable[[], Any]
) -> None:
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})
    seen: list[Any] = []

    def bad_fn(d: Any) -> None:
        d["items"].append("bad")
        d["x"] = {"y~/z": make()}

    def after(d: Any) -> None:
        seen.append(copy.deepcopy(d))
        d["items"].append(3)

    outcomes, receipt = one_batch(p, [lambda d: d["items"].append(1), bad_fn, after])
    expected = lone_error(tmp_path, make())
    got = outcomes[1].error
    assert type(got) is type(expected), (got, expected)
    assert str(got) == str(expected)
    assert "/x/y~0~1z" in str(got), got
    assert [outcomes[0].error, outcomes[2].error] == [None, None]
    assert seen == [{"items": [1]}], "the next change saw nothing of the refused one"
    assert receipt.batch == 3
    assert statefile.Doc(p).read() == {"items": [1, 3]}


def test_the_exact_errors_of_a_batched_change(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})

    def nan(d: Any) -> None:
        d["stats"] = {"mean": [0.5, math.nan]}

    def key(d: Any) -> None:
        d["servers"] = {"ok": 1, 1: "db1"}

    def circular(d: Any) -> None:
        d["items"].append({"back": d})

    outcomes, _ = one_batch(p, [lambda d: d["items"].append(1), nan, key, circular])
    assert isinstance(outcomes[1].error, ValueError)
    assert str(outcomes[1].error) == (
        "cannot store the value as JSON: NaN is not a JSON number (JSON has no NaN or infinity)"
        " at /stats/mean/1"
    )
    assert isinstance(outcomes[2].error, TypeError)
    assert str(outcomes[2].error) == (
        "cannot store the value as JSON: the key 1 (int) is not a string (JSON object keys are"
        " strings) at /servers"
    )
    assert isinstance(outcomes[3].error, ValueError)
    assert str(outcomes[3].error) == (
        "cannot store the value as JSON: circular reference: this dict contains itself"
        " at /items/1/back"
    )
    assert statefile.Doc(p).read() == {"items": [1]}


def test_a_list_that_lies_about_its_length_is_written_as_iterated(tmp_path: Path) -> None:
    # The walk writes a list subclass as Python iterates it, whatever its __len__ says
    # (a serializer told "0 items" would write `[]` and then the items after it).
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})

    def lies(d: Any) -> None:
        d["l"] = Liar([1, 2])
        d["e"] = Liar()
        d["t"] = (3, 4)

    outcomes, _ = one_batch(p, [lies, lambda d: d["items"].append(1)])
    assert [o.error for o in outcomes] == [None, None]
    alone = tmp_path / "alone.json"
    statefile.Doc(alone).write({"items": [1], "l": Liar([1, 2]), "e": Liar(), "t": (3, 4)})
    assert p.read_bytes() == alone.read_bytes()
    assert statefile.Doc(p).read() == {"items": [1], "l": [1, 2], "e": [], "t": [3, 4]}


def test_objects_shared_between_changes_of_a_batch(tmp_path: Path) -> None:
    # A change stores one list under two keys and keeps a reference to a third; the
    # next changes mutate what they get. Each change sees, and the file gets, exactly
    # what JSON holds: two distinct lists, and nothing of the kept reference's later
    # changes.
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})
    kept: list[Any] = []
    seen: list[Any] = []

    def shares(d: Any) -> None:
        shared: list[int] = [1]
        d["a"] = shared
        d["b"] = shared
        d["c"] = {"n": 0}
        kept.append(d["c"])

    def mutates(d: Any) -> None:
        seen.append((d["a"] is d["b"], copy.deepcopy(d)))
        d["a"].append(2)
        kept[0]["n"] = 99
        kept[0]["outside"] = True

    def mutates_again(d: Any) -> None:
        seen.append((d["a"] is d["b"], copy.deepcopy(d)))
        d["c"]["n"] += 1

    outcomes, _ = one_batch(p, [shares, mutates, mutates_again])
    assert [o.error for o in outcomes] == [None] * 3
    assert seen == [
        (False, {"items": [], "a": [1], "b": [1], "c": {"n": 0}}),
        (False, {"items": [], "a": [1, 2], "b": [1], "c": {"n": 0}}),
    ]
    assert statefile.Doc(p).read() == {"items": [], "a": [1, 2], "b": [1], "c": {"n": 1}}


def test_a_dict_changed_while_it_is_written_is_a_runtime_error(tmp_path: Path) -> None:
    # Python code the walk runs (here a list subclass's __iter__) changes the dict
    # being written: as for CPython's own iteration, a RuntimeError (not a panic of
    # the binding, which Python sees as a BaseException), and nothing is written, in a
    # lone write and in a batched change.
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"items": []})
    before = p.read_bytes()

    def grows() -> dict[str, Any]:
        parent: dict[str, Any] = {}

        class Grow(list):  # type: ignore[type-arg]
            def __iter__(self) -> Any:
                parent["k%d" % len(parent)] = 1
                return iter([1])

        parent["a"] = Grow()
        parent["b"] = 2
        return parent

    def swaps() -> dict[str, Any]:
        # Same size, one key more than it had: "keys changed".
        parent: dict[str, Any] = {}

        class Swap(list):  # type: ignore[type-arg]
            def __iter__(self) -> Any:
                parent["new"] = 1
                del parent["a"]
                return iter([1])

        parent["a"] = Swap()
        parent["b"] = 2
        parent["c"] = 3
        return parent

    for make, message in [
        (grows, "dictionary changed size during iteration"),
        (swaps, "dictionary keys changed during iteration"),
    ]:
        with pytest.raises(RuntimeError, match=message):
            statefile.Doc(p).write(make())
        assert p.read_bytes() == before
        value = make()
        outcomes, _ = one_batch(
            p, [lambda d: d.__setitem__("x", value), lambda d: d["items"].append(1)]
        )
        assert isinstance(outcomes[0].error, RuntimeError), outcomes
        assert message in str(outcomes[0].error)
        assert outcomes[1].error is None
        assert statefile.Doc(p).read() == {"items": [1]}
        statefile.Doc(p).write({"items": []})
        before = p.read_bytes()
