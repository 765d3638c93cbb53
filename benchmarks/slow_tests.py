"""
Run the learning tests whose figures the README quotes (the slow ones, deselected by ``make test``, and the fast image /
Dict ones) and keep what they measured: each test records its figures with pytest's ``record_property``; this script
reads them from the JUnit XML report and writes them, with the outcome and wall time of every test and the commit
they ran at, to ``benchmarks/results/slow_tests.json``; pytest's own output goes to ``slow_tests.log`` next to it.

    python -m benchmarks.slow_tests                      # all of them, ~1 h on one core
    python -m benchmarks.slow_tests -k gail --out gail.json

Torch runs on one thread (the tests' figures depend on the thread count, see ``tests/test_learning.py``).
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from typing import Any

RESULTS = pathlib.Path(__file__).parent / "results"
ROOT = pathlib.Path(__file__).parent.parent
# fast tests whose figures the README quotes next to the slow ones
FAST_FIGURE_TESTS = [
    "tests/test_learning.py::test_pixel_catch_cnn_learns",
    "tests/test_learning.py::test_dict_reach_multi_input_learns",
]
SLOW_TEST_FILES = ["tests/test_learning.py", "tests/test_recurrent.py", "tests/test_bco.py", "tests/test_adversarial.py"]


def _value(text: str) -> Any:
    """A recorded property as JSON: numbers and None come back as such, anything else stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None if text == "None" else text


def parse_report(path: pathlib.Path) -> dict[str, dict[str, Any]]:
    """
    The outcome, duration and recorded properties of every test case of a JUnit XML report.

    :param path: the report written by ``pytest --junitxml``
    :return: ``{node id: {"outcome", "duration_s", "figures"[, "message"]}}``
    """
    cases: dict[str, dict[str, Any]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        node_id = f"{module}.py::{case.get('name')}"
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome, message = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag], found.get("message")
                if found.get("type") == "pytest.xfail":
                    outcome = "xfailed"  # an expected failure (the test's xfail reason)
        figures = {prop.get("name"): _value(prop.get("value", "")) for prop in case.iter("property")}
        cases[node_id] = {"outcome": outcome, "duration_s": round(float(case.get("time", 0.0)), 1), "figures": figures}
        if message:
            cases[node_id]["message"] = message[:500]
    return cases


def _commit() -> str:
    """The checked-out commit, marked ``-dirty`` when tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "sb3_cherry", "tests"], cwd=ROOT).returncode != 0
    return f"{head}-dirty" if dirty else head


def main() -> None:
    """Run the tests, write the JSON (atomically) and the log; exit with pytest's status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", default=None, help="pytest -k expression to run a subset")
    parser.add_argument("--out", default="slow_tests.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    out = RESULTS / args.out
    with tempfile.TemporaryDirectory() as scratch:
        report = pathlib.Path(scratch) / "report.xml"
        command = [sys.executable, "-m", "pytest", *SLOW_TEST_FILES, *FAST_FIGURE_TESTS, "-rA", "-p", "no:cacheprovider"]
        command += ["-m", "slow or not slow", "--junitxml", str(report), "-o", "junit_family=xunit1"]
        # the fast figure tests and every slow test; -k narrows further
        selection = "slow or pixel_catch_cnn_learns or dict_reach_multi_input_learns"
        command += ["-k", f"({selection}) and ({args.k})" if args.k else selection]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        started, commit = datetime.datetime.now(datetime.timezone.utc), _commit()  # the code the tests import
        with open(out.with_suffix(".log"), "w") as log:
            status = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        cases = parse_report(report) if report.exists() else {}
    result = {
        "commit": commit,
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m benchmarks.slow_tests" + (f" -k '{args.k}'" if args.k else ""),
        "python": platform.python_version(),
        "pytest_status": status,
        "tests": cases,
    }
    partial = out.with_suffix(".json.partial")
    partial.write_text(json.dumps(result, indent=1) + "\n")
    partial.replace(out)
    print(f"{sum(c['outcome'] == 'passed' for c in cases.values())}/{len(cases)} passed; wrote {out}")
    sys.exit(status)


if __name__ == "__main__":
    main()
