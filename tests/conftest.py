"""Test configuration: under CI, a skipped interop test is a failure.

Interop tests (marked `interop`) need real third-party SIP peers (SIPp,
baresip). On a developer machine without them they skip with the reason; when
`CI=true` or `PIPECAT_SIP_REQUIRE_INTEROP=1`, such a skip fails the run.
"""

import os

import pytest


def _interop_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or bool(
        os.environ.get("PIPECAT_SIP_REQUIRE_INTEROP")
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("interop") and _interop_required():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"interop test skipped under CI (skips are failures here): {reason}"
