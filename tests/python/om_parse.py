#!/usr/bin/env python3
"""Reads OpenMetrics expositions with prometheus_client's reference parser.

Usage: om_parse.py DIR

For every DIR/*.om, parses it with
prometheus_client.openmetrics.parser.text_string_to_metric_families and, if DIR/*.json
exists (what the crate's strict reader saw: families with name, type, unit, help and
samples), checks that the parser sees the same families, samples, label values, values,
timestamps and exemplars. Exits 1 on any parse error or difference, listing them all.

Run by the crate's unit test `exposition::tests::python` (REQUIRE_PYTHON_OM=1 makes a
missing Python or prometheus_client a failure instead of a skip).

Two quirks of the reference parser (prometheus_client 0.26) are allowed for here, not in
the crate: it drops leading spaces of HELP text (it splits the line on runs of spaces),
and it reads a timestamp between -1 and 0 as positive (int("-0") loses the sign).
"""

import json
import math
import pathlib
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def nanos(ts):
    """A timestamp (Timestamp, float, int or the written text) in integer nanoseconds."""
    if ts is None:
        return None
    if isinstance(ts, str):
        negative = ts.startswith("-")
        whole, _, fraction = ts.lstrip("-").partition(".")
        n = int(whole) * 10**9 + int(fraction.ljust(9, "0")[:9] or "0")
        return -n if negative else n
    if hasattr(ts, "sec"):
        return ts.sec * 10**9 + ts.nsec
    return round(ts * 10**9)


def same_value(got, want_text):
    want = float(want_text)
    got = float(got)
    return (math.isnan(got) and math.isnan(want)) or got == want


def same_timestamp(got, want_text):
    want = nanos(want_text)
    got = nanos(got)
    if got == want:
        return True
    # The parser's sign loss between -1 and 0.
    return want_text is not None and want_text.startswith("-0.") and got == -want


def compare(path, families, expected):
    errors = []
    if len(families) != len(expected):
        errors.append(f"{len(families)} families, expected {len(expected)}")
        return errors
    for got, want in zip(families, expected):
        where = f"family {want['name']}"
        if got.name != want["name"] or got.type != want["type"]:
            errors.append(f"{where}: read as {got.name} {got.type}, expected {want['type']}")
        if got.unit != (want["unit"] or ""):
            errors.append(f"{where}: unit {got.unit!r}, expected {want['unit']!r}")
        if got.documentation != (want["help"] or "").lstrip(" "):
            errors.append(f"{where}: help {got.documentation!r}, expected {want['help']!r}")
        if len(got.samples) != len(want["samples"]):
            errors.append(f"{where}: {len(got.samples)} samples, expected {len(want['samples'])}")
            continue
        for s, w in zip(got.samples, want["samples"]):
            at = f"{where}, sample {w['name']}{w['labels']}"
            if s.name != w["name"] or s.labels != w["labels"]:
                errors.append(f"{at}: read as {s.name}{s.labels}")
            if not same_value(s.value, w["value"]):
                errors.append(f"{at}: value {s.value!r}, expected {w['value']}")
            if not same_timestamp(s.timestamp, w["timestamp"]):
                errors.append(f"{at}: timestamp {s.timestamp!r}, expected {w['timestamp']}")
            e, we = s.exemplar, w["exemplar"]
            if (e is None) != (we is None):
                errors.append(f"{at}: exemplar {e!r}, expected {we!r}")
            elif e is not None:
                if e.labels != we["labels"] or not same_value(e.value, we["value"]):
                    errors.append(f"{at}: exemplar {e!r}, expected {we!r}")
                if not same_timestamp(e.timestamp, we["timestamp"]):
                    errors.append(f"{at}: exemplar timestamp {e.timestamp!r}, expected {we['timestamp']}")
    return errors


def main():
    directory = pathlib.Path(sys.argv[1])
    failures = 0
    files = sorted(directory.glob("*.om"))
    for path in files:
        # newline="" keeps a carriage return inside a label value as it is.
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        try:
            families = list(text_string_to_metric_families(text))
        except Exception as error:  # noqa: BLE001 - any parser error is a failure
            failures += 1
            print(f"{path.name}: parse error: {error!r}")
            continue
        expected_path = path.with_suffix(".json")
        if expected_path.exists():
            expected = json.loads(expected_path.read_text(encoding="utf-8"))
            errors = compare(path, families, expected)
            if errors:
                failures += 1
                for error in errors[:20]:
                    print(f"{path.name}: {error}")
    print(f"{len(files) - failures}/{len(files)} expositions read as written")
    return 1 if failures or not files else 0


if __name__ == "__main__":
    sys.exit(main())
