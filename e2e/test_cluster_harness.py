"""The harness itself: failures must say what was observed, and a ServiceAccount kubeconfig
must really authenticate as that ServiceAccount."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.helpers import CommandError, kubectl, run, unique_name, wait_for


def test_wait_for_returns_first_truthy_value() -> None:
    counter = itertools.count()
    assert wait_for(lambda: next(counter) >= 3 and "done", timeout=5, interval=0.01) == "done"


def test_wait_for_timeout_reports_last_observation() -> None:
    states = iter(["Pending", "ContainerCreating", "CrashLoopBackOff"] + ["Error"] * 1000)
    with pytest.raises(AssertionError) as exc:
        wait_for(
            lambda: next(states) == "Running" or None,
            timeout=0.3,
            interval=0.01,
            describe="pod web Running",
            observe=lambda: "phase=Error restarts=7",
        )
    message = str(exc.value)
    assert "pod web Running" in message
    assert "phase=Error restarts=7" in message
    assert "last observed: None" in message


def test_wait_for_reports_the_last_exception() -> None:
    def probe() -> bool:
        raise LookupError("deployment web not found")

    with pytest.raises(AssertionError, match="deployment web not found"):
        wait_for(probe, timeout=0.1, interval=0.01, describe="deployment web")


def test_run_failure_shows_command_exit_code_and_stderr() -> None:
    script = "import sys; print('some output'); sys.stderr.write('boom: bad flag'); sys.exit(3)"
    with pytest.raises(CommandError) as exc:
        run([sys.executable, "-c", script])
    assert exc.value.returncode == 3
    assert "exit 3" in str(exc.value) and "boom: bad flag" in str(exc.value)
    assert "some output" in str(exc.value)


def test_unique_name_is_a_dns_label() -> None:
    name = unique_name("Test_Something::With Weird/Chars" * 3)
    assert len(name) <= 63
    assert all(c.isdigit() or c == "-" or "a" <= c <= "z" for c in name), name


def test_serviceaccount_kubeconfig_authenticates_as_the_serviceaccount(
    namespace: str, sa_kubeconfig: Callable[[str, str], Path]
) -> None:
    as_sa = sa_kubeconfig(namespace, "whoami")
    # SelfSubjectReview is allowed for every authenticated identity.
    review = json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=as_sa).stdout)
    user = review["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:whoami"
    assert f"system:serviceaccounts:{namespace}" in user["groups"]
