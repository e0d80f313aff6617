#!/usr/bin/env python3
"""Counts of a scripts/swift-functests run, its JSON result and the baseline comparison.

    summarize.py --records DIR --out FILE.json [--baseline FILE] [--write-baseline FILE]
                 [--meta KEY=VALUE]... FILE...

DIR holds one `<file>.jsonl` of swift_functests_record.py lines and one `<file>.status` (pytest's exit
status, or `timeout`) per test file run. Each test gets one outcome, counted as pytest
counts: `failed` if its call failed, `error` if its setup failed, `skipped`, or `passed`; a
failed teardown (where unittest's tearDownClass and tearDownModule land) is counted as one
more error, as pytest does, without changing the test's outcome. A test that started but
never reported (its pytest was killed) is `unfinished`. --select names what was asked for
(files, classes, tests; default FILES), --filtered says pytest -k chose among them.

A baseline file lists test ids (pytest node ids such as
`test/functional/tests.py::TestFile::testCopy`), one a line, `#` comments allowed: the
tests that passed on the reference. The comparison counts how many of the listed tests that
were selected here passed, and names the others with their outcome here.

Prints a table; writes the JSON result to --out. Exit status 0, or 1 when a file could not
run at all (pytest's status 2-4 with no test reported: a collection or import failure).
"""

import argparse
import json
import os
import sys
import time

OUTCOMES = ("passed", "failed", "skipped", "errors")


def load_records(path):
    recs = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        recs.append(json.loads(line))
                    except ValueError:
                        pass  # a line cut by a kill
    return recs


def outcomes(recs):
    """nodeid -> {outcome, message, duration, teardown_error}, in order of first report."""
    tests = {}
    collect_errors = []
    for r in recs:
        if r["when"] == "collect":
            collect_errors.append(r)
            continue
        t = tests.setdefault(r["nodeid"], {"outcome": "unfinished", "message": "",
                                           "duration": 0.0, "teardown_error": ""})
        t["duration"] = round(t["duration"] + r.get("duration", 0), 3)
        when, out, msg = r["when"], r["outcome"], r.get("message", "")
        if when == "start":
            continue
        if when == "setup":
            if out == "failed":
                t["outcome"], t["message"] = "error", msg
            elif out == "skipped":
                t["outcome"], t["message"] = "skipped", msg
        elif when == "call":
            t["outcome"] = out
            if out != "passed":
                t["message"] = msg
        elif when == "teardown":
            if out == "failed":
                t["teardown_error"] = msg or "teardown failed"
            if t["outcome"] == "unfinished":
                # setup passed, call never reported: treat as what pytest said last
                t["outcome"] = "error" if out == "failed" else t["outcome"]
    return tests, collect_errors


def read_baseline(path):
    ids = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                ids.append(line)
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--baseline")
    ap.add_argument("--write-baseline")
    ap.add_argument("--baseline-header", default="")
    ap.add_argument("--meta", action="append", default=[])
    ap.add_argument("--select", action="append", default=[],
                    help="a test id or file that was asked for (all of FILES if none)")
    ap.add_argument("--filtered", action="store_true", help="pytest -k chose among them")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()

    result = {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for kv in a.meta:
        k, _, v = kv.partition("=")
        result[k] = v
    files = {}
    all_tests = {}
    setup_failed = False
    for name in a.files:
        base = os.path.join(a.records, os.path.basename(name))
        recs = load_records(base + ".jsonl")
        status = "missing"
        if os.path.exists(base + ".status"):
            with open(base + ".status") as f:
                status = f.read().strip()
        tests, collect_errors = outcomes(recs)
        counts = dict.fromkeys(OUTCOMES, 0)
        unfinished = []
        for nodeid, t in tests.items():
            o = t["outcome"]
            if o == "passed":
                counts["passed"] += 1
            elif o == "failed":
                counts["failed"] += 1
            elif o == "skipped":
                counts["skipped"] += 1
            elif o == "error":
                counts["errors"] += 1
            else:
                unfinished.append(nodeid)
            if t["teardown_error"]:
                counts["errors"] += 1
        counts["errors"] += len(collect_errors)
        broken = status in ("2", "3", "4") and not tests
        setup_failed |= broken or status == "missing"
        files[name] = {
            **counts,
            "unfinished": unfinished,
            "pytest_status": status,
            "timed_out": status == "timeout",
            "duration_s": round(sum(t["duration"] for t in tests.values()), 1),
            "failed_tests": [n for n, t in tests.items() if t["outcome"] == "failed"],
            "error_tests": [n for n, t in tests.items()
                            if t["outcome"] == "error" or t["teardown_error"]],
            "collect_errors": [{"nodeid": c["nodeid"], "message": c["message"]}
                               for c in collect_errors],
        }
        all_tests.update(tests)

    totals = dict.fromkeys(OUTCOMES, 0)
    for f in files.values():
        for k in OUTCOMES:
            totals[k] += f[k]
    result["files"] = files
    result["totals"] = totals
    result["tests"] = {n: {k: v for k, v in t.items() if v or k == "outcome"}
                       for n, t in all_tests.items()}

    # ---- the table
    w = max(len(os.path.basename(n)) for n in files)
    print()
    print("%-*s  %6s  %6s  %7s  %6s  %s" % (w, "file", "passed", "failed", "skipped",
                                           "errors", "time"))
    for name, f in files.items():
        note = ""
        if f["timed_out"]:
            note = "  (killed at the file's time limit)"
        elif f["pytest_status"] in ("2", "3", "4") and not f["passed"] + f["failed"]:
            note = "  (did not run: pytest status %s)" % f["pytest_status"]
        print("%-*s  %6d  %6d  %7d  %6d  %5.0fs%s" % (
            w, os.path.basename(name), f["passed"], f["failed"], f["skipped"], f["errors"],
            f["duration_s"], note))
    print("%-*s  %6d  %6d  %7d  %6d" % (w, "total", totals["passed"], totals["failed"],
                                        totals["skipped"], totals["errors"]))
    for name, f in files.items():
        bad = f["failed_tests"] + [n for n in f["error_tests"] if n not in f["failed_tests"]]
        for c in f["collect_errors"]:
            print("  collection error %s: %s" % (c["nodeid"], c["message"]))
        if bad or f["unfinished"]:
            print("\n%s, not passed:" % os.path.basename(name))
            for n in bad:
                t = all_tests[n]
                why = t["message"] if t["outcome"] != "passed" else t["teardown_error"]
                tag = {"failed": "FAIL", "error": "ERROR"}.get(t["outcome"], "ERROR")
                if t["outcome"] == "passed":
                    tag = "ERROR(teardown)"
                print("  %-5s %s  -- %s" % (tag, n.split("::", 1)[1], why[:160]))
            for n in f["unfinished"]:
                print("  UNFINISHED %s" % n.split("::", 1)[1])

    # ---- the baseline
    if a.baseline:
        listed = read_baseline(a.baseline)
        selected = [n for n in listed if n in all_tests]
        passed = [n for n in selected if all_tests[n]["outcome"] == "passed"]
        missing = [n for n in selected if all_tests[n]["outcome"] != "passed"]
        # Listed tests that were asked for but not even reported here: cut off by a kill,
        # or gone from the suite.
        asked = a.select or list(files)

        def was_asked(n):
            return any(n == s or n.startswith(s + "::") for s in asked)
        not_reported = [] if a.filtered else [
            n for n in listed if n not in all_tests and was_asked(n)]
        result["baseline"] = {
            "file": a.baseline,
            "listed": len(listed),
            "selected": len(selected),
            "passed_here": len(passed),
            "not_passed_here": {n: all_tests[n]["outcome"] for n in missing},
            "not_reported_here": not_reported,
        }
        print("\nbaseline %s: %d of the %d tests it lists as passing on real Swift were run here;"
              " %d passed, %d did not%s" % (
                  a.baseline, len(selected), len(listed), len(passed), len(missing),
                  (", %d not reported" % len(not_reported)) if not_reported else ""))
        for n in missing:
            print("  %-10s %s" % (all_tests[n]["outcome"], n))
        if len(not_reported) <= 20:
            for n in not_reported:
                print("  %-10s %s" % ("unreported", n))
        else:
            print("  (%d of them were not reported: listed in %s)" % (len(not_reported), a.out))

    print("\n%d passed, %d failed, %d skipped, %d errors" % (
        totals["passed"], totals["failed"], totals["skipped"], totals["errors"]))

    if a.write_baseline:
        with open(a.write_baseline, "w", encoding="utf-8") as f:
            for line in a.baseline_header.splitlines():
                f.write(("# " + line).rstrip() + "\n")
            f.write("#\n# per file: passed / failed / skipped / errors\n")
            for name, c in files.items():
                f.write("#   %s: %d / %d / %d / %d\n" % (
                    name, c["passed"], c["failed"], c["skipped"], c["errors"]))
            for n in sorted(n for n, t in all_tests.items() if t["outcome"] == "passed"):
                f.write(n + "\n")
        print("wrote the %d passing tests to %s" % (totals["passed"], a.write_baseline))

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("result: %s" % a.out)
    return 1 if setup_failed else 0


if __name__ == "__main__":
    sys.exit(main())
