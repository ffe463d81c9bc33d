"""What the Deployment carries so the status can say why pods fail."""

from __future__ import annotations

import copy

from mlmodel_operator import builders
from mlmodel_operator.spec import parse_spec

OWNER = builders.Owner(name="fraud", namespace="team-a", uid="u1")
RAW = {
    "model": {"framework": "sklearn", "version": "1.0.0", "uri": "https://h/m"},
    "serving": {"replicas": 2},
}


def dep(raw=None, owner=OWNER, image="img:1"):
    return builders.build_deployment(owner, parse_spec(raw or RAW), image)


def containers(d):
    spec = d["spec"]["template"]["spec"]
    return spec["initContainers"][0], spec["containers"][0]


def env(c):
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def test_runtime_exits_on_load_failure_and_both_containers_report_why():
    fetch, runtime = containers(dep())
    assert fetch["name"] == builders.FETCH_CONTAINER == "fetch-model"
    assert runtime["name"] == builders.RUNTIME_CONTAINER == "runtime"
    assert env(runtime)["EXIT_ON_LOAD_FAILURE"] == "true"
    assert "EXIT_ON_LOAD_FAILURE" not in env(fetch)
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert runtime["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_user_may_turn_exit_on_load_failure_off_without_a_duplicate():
    raw = copy.deepcopy(RAW)
    raw["serving"]["env"] = [{"name": "EXIT_ON_LOAD_FAILURE", "value": "false"}]
    _, runtime = containers(dep(raw))
    names = [e["name"] for e in runtime["env"]]
    assert names.count("EXIT_ON_LOAD_FAILURE") == 1
    assert env(runtime)["EXIT_ON_LOAD_FAILURE"] == "false"


def test_template_hash_label_follows_the_template_and_nothing_else():
    labels = dep()["spec"]["template"]["metadata"]["labels"]
    h = labels[builders.TEMPLATE_HASH_LABEL]
    assert len(h) == 16 and int(h, 16) >= 0
    assert labels[builders.VERSION_LABEL] == "1.0.0"
    # Same template (another uid, generation): same hash; a rebuild is deterministic.
    other_owner = builders.Owner(name="fraud", namespace="team-a", uid="u2", generation=9)
    assert (
        dep(owner=other_owner)["spec"]["template"]["metadata"]["labels"][
            builders.TEMPLATE_HASH_LABEL
        ]
        == h
    )
    # Replicas are not in the template: scaling does not change it.
    scaled = copy.deepcopy(RAW)
    scaled["serving"]["replicas"] = 5
    assert dep(scaled)["spec"]["template"]["metadata"]["labels"][builders.TEMPLATE_HASH_LABEL] == h
    # A template change that keeps the version (memory, image) changes it.
    mem = copy.deepcopy(RAW)
    mem["serving"]["resources"] = {"limits": {"memory": "2Gi"}}
    for d in (dep(mem), dep(image="img:2")):
        assert d["spec"]["template"]["metadata"]["labels"][builders.TEMPLATE_HASH_LABEL] != h
    # The hash label is not part of the selector (that one is immutable).
    assert builders.TEMPLATE_HASH_LABEL not in dep()["spec"]["selector"]["matchLabels"]


def test_template_hash_ignores_its_own_label():
    t = dep()["spec"]["template"]
    assert builders.template_hash(t) == t["metadata"]["labels"][builders.TEMPLATE_HASH_LABEL]
