"""Values: the full JSON range both ways, nothing changed silently, and every value JSON
cannot hold refused with TypeError/ValueError, naming what and where, before any file
is touched."""

from __future__ import annotations

import collections
import enum
import math
import os
import random
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import statefile
from conftest import temps


def roundtrip(tmp_path: Path, value: Any) -> Any:
    doc = statefile.Doc(tmp_path / "v.json")
    doc.write(value)
    return doc.read()


def test_key_order_is_kept_both_ways(tmp_path: Path) -> None:
    value = {"zeta": 1, "alpha": {"y": 2, "b": 3, "a": 4}, "mid": [{"k2": 0, "k1": 1}]}
    back = roundtrip(tmp_path, value)
    assert list(back) == ["zeta", "alpha", "mid"]
    assert list(back["alpha"]) == ["y", "b", "a"]
    assert list(back["mid"][0]) == ["k2", "k1"]
    # And an update keeps the order of a file someone else wrote.
    p = tmp_path / "cfg.json"
    p.write_text('{"z": 1, "a": 2, "m": 3}')
    doc = statefile.Doc(p)
    doc.update(lambda d: d.__setitem__("b", 4))
    assert p.read_text().index('"z"') < p.read_text().index('"a"') < p.read_text().index('"b"')


def test_scalars_and_containers(tmp_path: Path) -> None:
    value = {
        "null": None,
        "t": True,
        "f": False,
        "zero": 0,
        "neg": -17,
        "i64min": -(2**63),
        "u64max": 2**64 - 1,
        "float": 1.5,
        "negzero": -0.0,
        "tiny": 5e-324,
        "huge": 1.7976931348623157e308,
        "empty_s": "",
        "empty_l": [],
        "empty_d": {},
        "tuple": (1, "two"),
        "unicode": "naïve ☃ 日本 \U0001f600 \u0000 \t\n\"\\",
        "\U0001f511 key": "astral key",
    }
    back = roundtrip(tmp_path, value)
    expected = dict(value, tuple=[1, "two"])
    assert back == expected
    assert type(back["t"]) is bool and type(back["zero"]) is int and type(back["float"]) is float
    assert math.copysign(1.0, back["negzero"]) == -1.0


def test_subclasses_of_the_json_types_are_stored_as_their_base(tmp_path: Path) -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    od = collections.OrderedDict([("b", 1), ("a", 2)])
    back = roundtrip(tmp_path, {"c": Color.RED, "n": Name("x"), "od": od, "dd": collections.defaultdict(int, k=3)})
    assert back == {"c": 1, "n": "x", "od": {"b": 1, "a": 2}, "dd": {"k": 3}}
    assert type(back["c"]) is int and list(back["od"]) == ["b", "a"]


def test_floats_round_trip_bit_for_bit(tmp_path: Path) -> None:
    rng = random.Random(7)
    floats = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(3000)]
    floats = [f for f in floats if math.isfinite(f)]
    floats += [0.1, 1 / 3, 2.5e-308, 1e23, 9007199254740993.0, 123456789.123456789]
    back = roundtrip(tmp_path, floats)
    bad = [(f, b) for f, b in zip(floats, back) if struct.pack("<d", f) != struct.pack("<d", b)]
    assert bad == [], f"{len(bad)} floats changed, e.g. {bad[:3]}"


@pytest.mark.parametrize("big", [2**64, -(2**63) - 1, 10**30, -(10**40), 7**1500])
def test_integers_beyond_64_bits_are_exact(tmp_path: Path, big: int) -> None:
    back = roundtrip(tmp_path, {"n": big})["n"]
    assert type(back) is int and back == big
    assert f'"n": {big}\n' in (tmp_path / "v.json").read_text()


# Regression (issue 9): 123456789012345678901234567890 became 1.2345678901234568e+29.
def test_a_file_with_a_big_integer_is_read_as_that_integer(tmp_path: Path) -> None:
    p = tmp_path / "ids.json"
    p.write_text('{"id": 123456789012345678901234567890}\n')
    got = statefile.Doc(p).read()
    assert got == {"id": 123456789012345678901234567890} and type(got["id"]) is int


def test_updates_write_back_a_big_integer_exactly(tmp_path: Path) -> None:
    p = tmp_path / "ids.json"
    p.write_text('{"ratio": 0.5, "id": 123456789012345678901234567890}\n')
    doc = statefile.Doc(p)
    with doc.update() as data:
        data["touched"] = True
    doc.update(lambda d: d.__setitem__("again", True))
    assert p.read_text() == (
        '{\n  "ratio": 0.5,\n  "id": 123456789012345678901234567890,\n'
        '  "touched": true,\n  "again": true\n}\n'
    )


class Custom:
    pass


def _cycle() -> Any:
    a: list[Any] = [1]
    a.append({"back": a})
    return {"root": a}


def _deep(n: int) -> Any:
    v: list[Any] = []
    cur = v
    for _ in range(n):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    return v


REFUSED = [
    ({"stats": {"mean": math.nan}}, ValueError, ["NaN", "/stats/mean"]),
    ({"a": [1, math.inf]}, ValueError, ["inf", "/a/1"]),
    ({"a": -math.inf}, ValueError, ["-inf", "/a"]),
    ({"tags": {"x", "y"}}, TypeError, ["set", "/tags"]),
    ({"tags": frozenset()}, TypeError, ["frozenset", "/tags"]),
    ({"blob": b"\x00"}, TypeError, ["bytes", "/blob"]),
    ({"when": Custom()}, TypeError, ["Custom", "/when"]),
    ({"servers": {1: "db1"}}, TypeError, ["key 1", "int", "/servers"]),
    ({"servers": {None: "db1"}}, TypeError, ["key None", "/servers"]),
    ({"servers": {("a",): 1}}, TypeError, ["key ('a',)", "tuple"]),
    ({"name": "bad \ud800 surrogate"}, ValueError, ["lone surrogate", "/name"]),
    ({"bad \udfff key": 1}, ValueError, ["lone surrogate"]),
    (_cycle(), ValueError, ["circular reference", "/root/1/back"]),
    ({"deep": _deep(200)}, ValueError, ["nested deeper than 127", "/deep/0"]),
    ({"d": Decimal("NaN")}, ValueError, ["Decimal('NaN')", "/d"]),
    ({"d": [Decimal("-Infinity")]}, ValueError, ["Decimal('-Infinity')", "/d/0"]),
    ({"d": Decimal("sNaN")}, ValueError, ["Decimal('sNaN')", "/d"]),
    # More digits than Python converts to text (sys.get_int_max_str_digits()).
    ({"n": 10**5000}, ValueError, ["/n", "integer", "limit"]),
    # The reader would read this dict back as the number 12.
    (
        {"a": [{"$serde_json::private::Number": "12"}]},
        ValueError,
        ["$serde_json::private::Number", "reserved", "/a/0"],
    ),
    # Read back as the list [1] (serde_json's raw values, which this package uses).
    (
        {"a": {"$serde_json::private::RawValue": "[1]"}},
        ValueError,
        ["$serde_json::private::RawValue", "reserved", "/a"],
    ),
]


@pytest.mark.parametrize("value,exc,words", REFUSED)
def test_values_json_cannot_hold_are_refused_before_any_file_is_touched(
    tmp_path: Path, value: Any, exc: type, words: list[str]
) -> None:
    # A new document: nothing at all is created (no document, no lock, no temp).
    new = statefile.Doc(tmp_path / "new" / "a.json", create_dirs=True)
    with pytest.raises(exc) as e:
        new.write(value)
    for w in words:
        assert w in str(e.value), f"{w!r} not in {e.value}"
    assert not (tmp_path / "new").exists()
    # An existing document: untouched, byte for byte, and no temp left.
    p = tmp_path / "old.json"
    doc = statefile.Doc(p)
    doc.write({"keep": True})
    before = p.read_bytes()
    for call in (
        lambda: doc.write(value),
        lambda: doc.create(value),
        lambda: statefile.write_json(p, value),
        lambda: doc.write_if(doc.version(), value),
    ):
        with pytest.raises(exc):
            call()
    with pytest.raises(exc):
        with doc.update() as data:
            data["bad"] = value
    with pytest.raises(exc):
        doc.update(lambda d: d.__setitem__("bad", value))
    assert p.read_bytes() == before
    assert temps(tmp_path) == []


def test_a_file_with_the_reserved_key_is_refused_not_read_as_a_number(
    tmp_path: Path,
) -> None:
    p = tmp_path / "foreign.json"
    p.write_text('{"\\u0024serde_json::private::Number": "12"}')
    with pytest.raises(statefile.Error) as e:
        statefile.Doc(p).read()
    assert "$serde_json::private::Number" in str(e.value)
    with pytest.raises(statefile.Error):
        statefile.read_json(p)


@pytest.mark.parametrize(
    "key", ["$serde_json::private::Number", "$serde_json::private::RawValue"]
)
def test_a_reserved_key_before_other_keys_is_refused_not_called_damage(
    tmp_path: Path, key: str
) -> None:
    # Regression: serde_json's read of `{"<key>": "5", "other": 1}` failed with a
    # syntax error, so the file was called corrupt and a fallback read served the
    # backup (and the RawValue key read back as 5).
    p = tmp_path / "foreign.json"
    doc = statefile.Doc(p, backups=2, fallback=True)
    doc.write({"v": 1})
    doc.write({"v": 2})
    p.write_text('{"%s": "5", "other": 1}' % key)
    before = p.read_bytes()
    with pytest.raises(statefile.Error) as e:
        doc.read()
    assert key in str(e.value) and "corrupt" not in str(e.value)
    with pytest.raises(statefile.Error):
        doc.update(lambda d: d.__setitem__("w", 1))
    assert p.read_bytes() == before


def test_very_deep_values_are_refused_without_a_stack_overflow(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nested deeper"):
        statefile.Doc(tmp_path / "a.json").write(_deep(1_000_000))
    # And a deeply nested file is a damaged document, not a crash.
    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(statefile.Corrupt):
        statefile.Doc(p).read()


def test_the_depth_limit_is_exactly_what_reads_back(tmp_path: Path) -> None:
    # 127 levels are stored and read back; 128 are refused.
    assert roundtrip(tmp_path, _deep(126)) == _deep(126)
    with pytest.raises(ValueError):
        statefile.Doc(tmp_path / "b.json").write(_deep(127))


def test_strings_with_every_kind_of_character(tmp_path: Path) -> None:
    s = "".join(chr(c) for c in range(0, 0x3000)) + "".join(
        chr(c) for c in range(0xE000, 0x10000) if c != 0xFFFE
    ) + "\U00010000\U0010ffff"
    assert roundtrip(tmp_path, {"s": s})["s"] == s


def test_lone_surrogates_in_a_file_are_damage_not_garbage(tmp_path: Path) -> None:
    # A file written by json.dump with a lone surrogate escape cannot be read into a
    # valid str without changing it: statefile says the file is damaged.
    p = tmp_path / "a.json"
    p.write_text('{"s": "\\ud800"}')
    with pytest.raises(statefile.Corrupt) as e:
        statefile.Doc(p).read()
    assert "surrogate" in str(e.value)


def test_no_file_touched_for_a_refused_default(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    with pytest.raises(TypeError):
        doc.update(lambda d: None, default={1, 2})
    with pytest.raises(TypeError):
        doc.update(default={"tags": {1, 2}})
    assert os.listdir(tmp_path) == []
