"""A pytest plugin for scripts/swift-functests: one JSON line per report.

Loaded with `-p swift_functests_record` (this folder on PYTHONPATH). The start of every test, every phase
report (setup, call, teardown) and every failed collection is appended, as it happens, to the
file named by $SWIFT_FUNCTESTS_RECORD, so a run that is killed half way still leaves what
it did. summarize.py turns these lines into counts.
"""

import json
import os

_out = None


def pytest_configure(config):
    global _out
    path = os.environ.get("SWIFT_FUNCTESTS_RECORD")
    if path:
        _out = open(path, "a", buffering=1, encoding="utf-8")


def _message(report):
    """One line saying why: the skip reason, or the failure's last line."""
    lr = report.longrepr
    if lr is None:
        return ""
    if isinstance(lr, tuple) and len(lr) == 3:  # a skip: (file, line, reason)
        return str(lr[2])
    crash = getattr(lr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return crash.message.splitlines()[0] if crash.message else ""
    text = str(lr).strip().splitlines()
    return text[-1] if text else ""


def _write(rec):
    if _out is not None:
        _out.write(json.dumps(rec) + "\n")


def pytest_runtest_logstart(nodeid, location):
    _write({"nodeid": nodeid, "when": "start", "outcome": "", "duration": 0, "message": ""})


def pytest_runtest_logreport(report):
    _write({
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "duration": round(report.duration, 3),
        "message": _message(report)[:500],
    })


def pytest_collectreport(report):
    if report.failed:
        _write({
            "nodeid": report.nodeid,
            "when": "collect",
            "outcome": "failed",
            "duration": 0,
            "message": _message(report)[:500],
        })


def pytest_unconfigure(config):
    if _out is not None:
        _out.close()
