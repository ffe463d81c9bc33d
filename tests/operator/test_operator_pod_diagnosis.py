"""pod_diagnosis: each pod-level cause, read from real pod status shapes."""

from __future__ import annotations

import pytest
from mlmodel_operator import builders
from mlmodel_operator.pod_diagnosis import (
    FETCH_EXIT,
    current_pods,
    diagnose,
    diagnose_pod,
)

from tests.operator.pod_fixtures import (
    UNSCHEDULABLE_MSG,
    container_status,
    crashloop_waiting,
    deployment,
    fetch_c,
    fetch_failing,
    pod,
    ready_pod,
    runtime_c,
    runtime_state,
    scheduled_conditions,
    terminated,
    unschedulable_pod,
)

GOLDEN = "model fraud failed to load: golden check failed: probabilities differ from sample.json"


def test_unschedulable_carries_the_schedulers_message():
    d = diagnose_pod(unschedulable_pod())
    assert d is not None
    assert d.reason == "Unschedulable"
    assert UNSCHEDULABLE_MSG in d.message
    assert "fraud-6d4f9c8b7-x2x7k" in d.message


def test_image_never_pull_is_image_not_present():
    msg = (
        'Container image "registry.example.com/n1v1-ml-serving:0.1.0" is not present with '
        "pull policy of Never"
    )
    p = pod(
        conditions=scheduled_conditions(initialized=False),
        init_statuses=[
            container_status(
                fetch_c(), state={"waiting": {"reason": "ErrImageNeverPull", "message": msg}}
            )
        ],
        statuses=[container_status(runtime_c(), state={"waiting": {"reason": "PodInitializing"}})],
    )
    d = diagnose_pod(p)
    assert d is not None and d.reason == "ImageNotPresent"
    assert msg in d.message and "init container fetch-model" in d.message


PULL_ERR = (
    "rpc error: code = NotFound desc = failed to pull and unpack image "
    '"registry.example.com/n1v1-ml-serving:0.1.0": failed to resolve reference '
    '"registry.example.com/n1v1-ml-serving:0.1.0": registry.example.com/n1v1-ml-serving:0.1.0: '
    "not found"
)


@pytest.mark.parametrize(
    "reason,message",
    [
        (
            "ErrImagePull",
            f'Failed to pull image "registry.example.com/n1v1-ml-serving:0.1.0": {PULL_ERR}',
        ),
        (
            "ImagePullBackOff",
            f'Back-off pulling image "registry.example.com/n1v1-ml-serving:0.1.0": '
            f"ErrImagePull: {PULL_ERR}",
        ),
    ],
)
def test_pull_errors_give_one_reason_and_one_message_through_the_back_off(reason, message):
    def pull_pod(r: str, m: str) -> dict:
        return pod(
            conditions=scheduled_conditions(initialized=False),
            init_statuses=[
                container_status(fetch_c(), state={"waiting": {"reason": r, "message": m}})
            ],
            statuses=[
                container_status(runtime_c(), state={"waiting": {"reason": "PodInitializing"}})
            ],
        )

    d = diagnose_pod(pull_pod(reason, message))
    assert d is not None and d.reason == "ImagePullFailed"
    assert PULL_ERR in d.message
    assert "registry.example.com/n1v1-ml-serving:0.1.0" in d.message
    # ErrImagePull and ImagePullBackOff alternate on every retry: the same status both times.
    other = diagnose_pod(
        pull_pod(
            "ErrImagePull",
            f'Failed to pull image "registry.example.com/n1v1-ml-serving:0.1.0": {PULL_ERR}',
        )
    )
    assert other == d


@pytest.mark.parametrize(
    "waiting,reason,text",
    [
        (
            {
                "reason": "InvalidImageName",
                "message": 'Failed to apply default image tag "Registry/N1V1:x": couldn\'t '
                'parse image name "Registry/N1V1:x": invalid reference format: repository '
                "name must be lowercase",
            },
            "InvalidImageName",
            "repository name must be lowercase",
        ),
        (
            {"reason": "CreateContainerConfigError", "message": 'secret "s3-creds" not found'},
            "CreateContainerConfigError",
            'secret "s3-creds" not found',
        ),
        (
            {
                "reason": "CreateContainerError",
                "message": "failed to generate container spec: failed to apply OCI options: "
                "no such file or directory",
            },
            "CreateContainerError",
            "failed to generate container spec",
        ),
    ],
)
def test_container_creation_errors_keep_the_kubelets_message(waiting, reason, text):
    p = pod(
        conditions=scheduled_conditions(initialized=False),
        init_statuses=[container_status(fetch_c(), state={"waiting": waiting})],
        statuses=[container_status(runtime_c(), state={"waiting": {"reason": "PodInitializing"}})],
    )
    d = diagnose_pod(p)
    assert d is not None and d.reason == reason and text in d.message


def test_crash_loop_names_exit_code_and_termination_message():
    p = runtime_state(
        crashloop_waiting("runtime"), terminated(3, message=GOLDEN + "\n"), restarts=4
    )
    d = diagnose_pod(p)
    assert d is not None and d.reason == "CrashLoopBackOff"
    assert "exit code 3" in d.message
    assert "a model failed to load at start-up" in d.message
    assert GOLDEN in d.message
    assert "restart" not in d.message.lower().replace("keeps exiting", "")  # no counts


def test_crash_loop_diagnosis_is_stable_through_the_whole_loop():
    """running -> terminated -> CrashLoopBackOff -> running: one status, not four."""
    last = terminated(3, message=GOLDEN)
    phases = [
        runtime_state(crashloop_waiting("runtime", "10s"), last, restarts=1),
        runtime_state({"running": {"startedAt": "2026-03-02T09:16:00Z"}}, last, restarts=2),
        runtime_state(
            terminated(3, message=GOLDEN, at="2026-03-02T09:16:04Z"),
            terminated(3, message=GOLDEN),
            restarts=2,
        ),
        runtime_state(crashloop_waiting("runtime", "5m0s"), last, restarts=5),
    ]
    found = {diagnose_pod(p) for p in phases}
    assert len(found) == 1 and next(iter(found)).reason == "CrashLoopBackOff"


def test_oom_killed_names_the_memory_limit():
    dep = deployment(resources={"limits": {"memory": "768Mi"}})
    p = runtime_state(
        crashloop_waiting("runtime"), terminated(137, "OOMKilled"), dep=dep, restarts=2
    )
    d = diagnose_pod(p)
    assert d is not None and d.reason == "OOMKilled"
    assert "768Mi" in d.message and "container runtime" in d.message


def test_oom_killed_while_running_again_is_still_oom():
    p = runtime_state(
        {"running": {"startedAt": "2026-03-02T09:16:00Z"}}, terminated(137, "OOMKilled")
    )
    d = diagnose_pod(p)
    assert d is not None and d.reason == "OOMKilled"
    assert "1Gi" in d.message  # the operator's default limit


def test_fetch_exit_codes_match_the_fetch_package():
    from serving_runtime.tools.fetch import errors

    codes = {
        errors.FetchError.exit_code: "FetchFailed",
        errors.UsageError.exit_code: "FetchFailed",
        errors.SourceError.exit_code: "FetchSourceUnreadable",
        errors.INTEGRITY_EXIT_CODE: "FetchSha256Mismatch",
        errors.UnsafeArchiveError.exit_code: "FetchUnsafeArtifact",
        errors.MetadataError.exit_code: "FetchInvalidModelFolder",
    }
    assert {code: reason for code, (reason, _) in FETCH_EXIT.items()} == codes


@pytest.mark.parametrize(
    "code,reason,line",
    [
        (
            3,
            "FetchSourceUnreadable",
            "https://models.example.com/fraud.tar.gz: HTTP 404 Not Found",
        ),
        (
            4,
            "FetchSha256Mismatch",
            "model.joblib: sha256 is 9f86d08188 but spec.model.sha256 pins 2c26b46b68",
        ),
        (
            5,
            "FetchUnsafeArtifact",
            "archive member '../etc/passwd' tries to leave the destination ('..'); refused",
        ),
        (
            6,
            "FetchInvalidModelFolder",
            "metadata.json names artifact 'model.ubj', which is not a file in the model folder",
        ),
        (2, "FetchFailed", "--sha256 must be 64 hex digits"),
        (1, "FetchFailed", "No space left on device: /app/models"),
    ],
)
def test_fetch_failures_map_exit_codes_and_keep_the_fetchs_line(code, reason, line):
    # FallbackToLogsOnError: the kubelet stores the log tail, the fetch's line last.
    tail = f"fetch: resolving {code}\nfetch: error: {line}\n"
    d = diagnose_pod(fetch_failing(code, tail))
    assert d is not None and d.reason == reason
    assert f"exited with code {code}" in d.message
    assert line in d.message
    assert "fetch: error:" not in d.message and "resolving" not in d.message


def test_fetch_failure_is_stable_across_back_off_and_retries():
    tail = "fetch: error: https://h/m.tar.gz: connection refused\n"
    a = diagnose_pod(fetch_failing(3, tail, backoff="10s"))
    b = diagnose_pod(fetch_failing(3, tail, backoff="2m40s"))
    running_again = pod(
        conditions=scheduled_conditions(initialized=False),
        init_statuses=[
            container_status(
                fetch_c(),
                state={"running": {"startedAt": "2026-03-02T09:17:00Z"}},
                last=terminated(3, message=tail),
                restarts=4,
                started=True,
            )
        ],
        statuses=[container_status(runtime_c(), state={"waiting": {"reason": "PodInitializing"}})],
    )
    assert a == b == diagnose_pod(running_again)
    assert a is not None and a.reason == "FetchSourceUnreadable"


def test_fetch_oom_killed():
    p = pod(
        conditions=scheduled_conditions(initialized=False),
        init_statuses=[
            container_status(
                fetch_c(),
                state=crashloop_waiting("fetch-model"),
                last=terminated(137, "OOMKilled"),
                restarts=1,
            )
        ],
        statuses=[container_status(runtime_c(), state={"waiting": {"reason": "PodInitializing"}})],
    )
    d = diagnose_pod(p)
    assert d is not None and d.reason == "OOMKilled" and "init container fetch-model" in d.message


def test_healthy_and_progressing_pods_have_no_diagnosis():
    fetching = pod(
        conditions=scheduled_conditions(initialized=False),
        init_statuses=[
            container_status(
                fetch_c(), state={"running": {"startedAt": "2026-03-02T09:14:30Z"}}, started=True
            )
        ],
        statuses=[container_status(runtime_c(), state={"waiting": {"reason": "PodInitializing"}})],
    )
    creating = pod(
        conditions=[],
        init_statuses=[
            container_status(fetch_c(), state={"waiting": {"reason": "PodInitializing"}})
        ],
        statuses=[container_status(runtime_c(), state={"waiting": {"reason": "PodInitializing"}})],
    )
    loading = runtime_state({"running": {"startedAt": "2026-03-02T09:14:45Z"}})
    pending_unscheduled = pod(conditions=[])  # just created, the scheduler has not looked yet
    for p in (fetching, creating, loading, pending_unscheduled, ready_pod()):
        assert diagnose_pod(p) is None


def test_terminating_pods_are_not_diagnosed():
    p = runtime_state(crashloop_waiting("runtime"), terminated(3, message=GOLDEN))
    p["metadata"]["deletionTimestamp"] = "2026-03-02T09:20:00Z"
    assert diagnose_pod(p) is None


def test_current_pods_by_template_hash_not_by_version():
    old_dep = deployment(resources={"limits": {"memory": "512Mi"}})
    new_dep = deployment(resources={"limits": {"memory": "2Gi"}})  # same version, new template
    old = runtime_state(
        crashloop_waiting("runtime"),
        terminated(137, "OOMKilled"),
        dep=old_dep,
        name="fraud-5c7b8d9f4-aaaaa",
        template_hash="5c7b8d9f4",
    )
    new = unschedulable_pod(new_dep, name="fraud-7f8e9d6c5-bbbbb", template_hash="7f8e9d6c5")
    assert current_pods([old, new], new_dep) == [new]
    assert current_pods([old, new], old_dep) == [old]
    assert diagnose(current_pods([old, new], new_dep)).reason == "Unschedulable"


def test_current_pods_fall_back_to_the_version_label():
    dep = deployment("2.0.0")
    del dep["spec"]["template"]["metadata"]["labels"][builders.TEMPLATE_HASH_LABEL]
    v1 = ready_pod(deployment("1.0.0"), name="fraud-1-a")
    v2 = ready_pod(deployment("2.0.0"), name="fraud-2-a")
    assert current_pods([v1, v2], dep) == [v2]
    assert current_pods([v1, v2], None) == []
    assert current_pods(None, dep) == []


def test_diagnose_picks_one_cause_deterministically():
    crash = runtime_state(
        crashloop_waiting("runtime"), terminated(3, message=GOLDEN), name="fraud-6d4f9c8b7-zzzzz"
    )
    sched = unschedulable_pod(name="fraud-6d4f9c8b7-aaaaa")
    fine = ready_pod(name="fraud-6d4f9c8b7-mmmmm")
    assert diagnose([sched, fine, crash]).reason == "CrashLoopBackOff"
    assert diagnose([crash, fine, sched]) == diagnose([sched, crash, fine])
    assert diagnose([fine]) is None and diagnose([]) is None


def test_long_termination_messages_are_cut():
    p = runtime_state(crashloop_waiting("runtime"), terminated(1, message="x" * 5000))
    d = diagnose_pod(p)
    assert d is not None and len(d.message) < 1300 and d.message.endswith("...")
