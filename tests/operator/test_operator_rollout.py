"""spec.canary / spec.shadow: the spec checks, what the builders put in the pod, the
rollback decision and the status (docs/rollouts.md). The same settings reach the runtime:
its own parser reads what the operator writes."""

from __future__ import annotations

import copy
import json

import pytest
from mlmodel_operator import builders, names, rollout
from mlmodel_operator.spec import SpecError, parse_spec
from mlmodel_operator.status import CHALLENGER, Observed, compute_status

from serving_runtime.models.folder_format import CHALLENGERS_DIR
from serving_runtime.server.rollout import parse_challengers

OWNER = builders.Owner(name="fraud", namespace="team-a", uid="1234-uid", generation=3)
IMAGE = "n1v1-ml-serving:0.1.0"
BASE = {"model": {"framework": "xgboost", "version": "1.0.0",
                  "uri": "configmap://fraud-v1", "credentialsSecret": "store"}}
CANARY = {"version": "1.1.0", "uri": "configmap://fraud-v2", "weight": 10,
          "maxErrorRatePercent": 2, "maxLatencyP95Milliseconds": 50, "minRequests": 200}
NOW = "2026-12-03T07:00:00Z"


def spec(**over):
    raw = copy.deepcopy(BASE)
    raw.update(copy.deepcopy(over))
    return parse_spec(raw)


def pod_spec(dep):
    return dep["spec"]["template"]["spec"]


def runtime_env(dep):
    (c,) = pod_spec(dep)["containers"]
    return {e["name"]: e.get("value") for e in c["env"]}


def test_the_challenger_folder_is_the_runtimes() -> None:
    assert names.CHALLENGERS_DIR == CHALLENGERS_DIR


def test_a_canary_is_fetched_beside_the_champion_and_configured_for_the_runtime() -> None:
    dep = builders.build_deployment(OWNER, spec(canary=CANARY), IMAGE)
    ps = pod_spec(dep)
    champion, challenger = ps["initContainers"]
    assert (champion["name"], challenger["name"]) == ("fetch-model", "fetch-challenger")
    args = challenger["args"]
    assert args[args.index("--dest") + 1] == f"/app/models/{CHALLENGERS_DIR}"
    assert args[args.index("--name") + 1] == "fraud"
    assert args[args.index("--version") + 1] == "1.1.0"
    assert args[args.index("--framework") + 1] == "xgboost"  # the champion's by default
    assert args[args.index("--uri") + 1] == "file:///mnt/challenger-source"
    # its own source volume; the champion's credentials reach both fetch steps only
    assert {"name": "challenger-source", "configMap": {"name": "fraud-v2"}} in ps["volumes"]
    assert challenger["envFrom"] == champion["envFrom"] == [{"secretRef": {"name": "store"}}]
    assert challenger["securityContext"]["readOnlyRootFilesystem"] is True
    conf = parse_challengers(runtime_env(dep)[names.ENV_CHALLENGERS])  # the runtime's parser
    c = conf["fraud"]
    assert (c.mode, c.weight, c.max_error_rate_percent, c.max_latency_p95_ms,
            c.min_requests) == ("canary", 10, 2, 50, 200)


def test_a_shadow_with_its_own_framework_and_sha256() -> None:
    sha = "a" * 64
    dep = builders.build_deployment(OWNER, spec(shadow={
        "version": "2", "uri": "https://store.example/m.tar.gz", "framework": "lightgbm",
        "sha256": sha}), IMAGE)
    _, challenger = pod_spec(dep)["initContainers"]
    args = challenger["args"]
    assert args[args.index("--framework") + 1] == "lightgbm"
    assert args[args.index("--sha256") + 1] == sha
    assert args[args.index("--uri") + 1] == "https://store.example/m.tar.gz"
    assert [v["name"] for v in pod_spec(dep)["volumes"]] == ["models", "tmp", "model-source"]
    conf = parse_challengers(runtime_env(dep)[names.ENV_CHALLENGERS])
    assert conf["fraud"].mode == "shadow" and conf["fraud"].weight == 0


def test_rolled_back_means_the_champion_alone_and_another_template() -> None:
    s = spec(canary=CANARY)
    with_it = builders.build_deployment(OWNER, s, IMAGE)
    without = builders.build_deployment(OWNER, s, IMAGE, challenger=False)
    assert without == builders.build_deployment(OWNER, spec(), IMAGE)
    assert names.ENV_CHALLENGERS not in runtime_env(without)
    labels = [d["spec"]["template"]["metadata"]["labels"][names.TEMPLATE_HASH_LABEL]
              for d in (with_it, without)]
    assert labels[0] != labels[1]  # the pods roll back


@pytest.mark.parametrize("over, message", [
    ({"canary": CANARY, "shadow": {"version": "3", "uri": "configmap://x"}},
     "canary and shadow cannot both be set"),
    ({"canary": {**CANARY, "version": "1.0.0"}}, "canary.version must differ"),
    ({"shadow": {"version": "1.0.0", "uri": "configmap://x"}}, "shadow.version must differ"),
    ({"canary": {**CANARY, "weight": 101}}, "spec.canary.weight"),
    ({"canary": {**CANARY, "uri": "ftp://x"}}, "spec.canary.uri"),
    ({"shadow": {"version": "2", "uri": "configmap://x", "weight": 5}}, "spec.shadow.weight"),
])
def test_challenger_specs_the_operator_refuses(over, message) -> None:
    with pytest.raises(SpecError, match=message):
        spec(**over)


def test_the_operator_owns_the_challengers_setting() -> None:
    with pytest.raises(SpecError, match="CHALLENGERS"):
        spec(serving={"env": [{"name": "CHALLENGERS", "value": "{}"}]})


# --- the rollback decision ------------------------------------------------------------


def health(state, version="1.1.0", reason=None, name="fraud"):
    return {"models": [{"name": name, "challenger": {"state": state, "version": version,
                                                     "reason": reason}}]}


def test_pod_reports_from_health_documents() -> None:
    assert rollout.health_report("p", health("serving"), "fraud").state == "serving"
    assert rollout.health_report("p", None, "fraud").state is None
    assert "does not serve fraud" in rollout.health_report(
        "p", health("serving", name="other"), "fraud").reason
    no_ch = {"models": [{"name": "fraud"}]}
    assert rollout.health_report("p", no_ch, "fraud").reason == \
        "the runtime reports no challenger"


def test_serving_in_every_pod_is_serving() -> None:
    s = spec(canary=CANARY)
    reports = [rollout.PodReport(f"p{i}", "serving", "1.1.0") for i in range(2)]
    view = rollout.decide(s, reports, None, NOW)
    assert view is not None and view.state == "Serving" and view.rolled_back is None
    assert (view.pods_serving, view.pods_reporting) == (2, 2)
    assert "answers 10% of requests in 2 pod(s)" in view.reason


def test_one_pods_failure_rolls_back_with_the_reason() -> None:
    s = spec(canary=CANARY)
    reports = [rollout.PodReport("p0", "serving", "1.1.0"),
               rollout.PodReport("p1", "rolled_back", "1.1.0", "error rate 9.0% over 200")]
    view = rollout.decide(s, reports, None, NOW)
    assert view is not None and view.state == "RolledBack"
    assert view.rolled_back == {
        "mode": "canary", "version": "1.1.0", "at": NOW, "cause": "LimitExceeded",
        "reason": "canary 1.1.0 was rolled back in pod p1: error rate 9.0% over 200"}
    failed = rollout.decide(s, [rollout.PodReport("p0", "failed", None, "sha256 differs")],
                            None, NOW)
    assert failed is not None and failed.rolled_back["cause"] == "LoadFailed"


def test_a_rollback_holds_until_the_spec_names_another_challenger() -> None:
    record = {"mode": "canary", "version": "1.1.0", "reason": "r", "at": NOW}
    previous = {"rolledBack": record}
    assert rollout.rolled_back_record(spec(canary=CANARY), previous) == record
    assert rollout.rolled_back_record(spec(canary={**CANARY, "version": "1.2.0"}),
                                      previous) is None
    assert rollout.rolled_back_record(spec(shadow={"version": "1.1.0", "uri": "configmap://x"}),
                                      previous) is None  # another mode: another experiment
    assert rollout.rolled_back_record(spec(), previous) is None


def test_a_pod_that_does_not_answer_once_changes_nothing() -> None:
    s = spec(canary=CANARY)
    v = rollout.decide(s, [rollout.PodReport("p0", "serving"),
                           rollout.PodReport("p1", None, reason="timed out")], None, NOW)
    assert v.state == "Serving" and (v.pods_serving, v.pods_reporting) == (1, 2)
    v = rollout.decide(s, [rollout.PodReport("p1", None, reason="timed out")], None, NOW)
    assert v.state == "Unknown" and "timed out" in v.reason


def test_not_yet_reported_is_loading_or_unknown() -> None:
    s = spec(canary=CANARY)
    assert rollout.decide(s, [], None, NOW).state == "Unknown"
    v = rollout.decide(s, [rollout.PodReport("p0", "serving"),
                           rollout.PodReport("p1", "loading")], None, NOW)
    assert v.state == "Loading" and "p1: loading" in v.reason


# --- the status --------------------------------------------------------------------------


def _status(view, previous=None):
    dep = {"metadata": {"generation": 1}, "spec": {"replicas": 2, "template": {"spec": {
        "containers": [{"env": [{"name": names.ENV_MODEL_VERSION, "value": "1.0.0"}]}]}}},
        "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                   "updatedReplicas": 2, "availableReplicas": 2}}
    return compute_status(Observed("fraud", "team-a", 3, "1.0.0", dep, previous or {},
                                   challenger=view), now=NOW)


def test_status_shows_each_version_and_the_split() -> None:
    s = spec(canary=CANARY)
    view = rollout.decide(s, [rollout.PodReport("p0", "serving")] * 2, None, NOW)
    st = _status(view)
    assert st["versions"] == [
        {"version": "1.0.0", "role": "champion", "weight": 90, "serving": True},
        {"version": "1.1.0", "role": "canary", "weight": 10, "serving": True}]
    assert st["challenger"]["state"] == "Serving" and st["challenger"]["pods"] == "2/2"
    (c,) = [c for c in st["conditions"] if c["type"] == CHALLENGER]
    assert (c["status"], c["reason"]) == ("True", "Serving")
    assert st["rolledBack"] is None


def test_status_after_a_rollback() -> None:
    s = spec(canary=CANARY)
    view = rollout.decide(s, [rollout.PodReport("p1", "failed", None, "golden sample")],
                          None, NOW)
    st = _status(view)
    assert st["versions"][0]["weight"] == 100 and st["versions"][1]["weight"] == 0
    (c,) = [c for c in st["conditions"] if c["type"] == CHALLENGER]
    assert (c["status"], c["reason"]) == ("False", "RolledBack")
    assert "golden sample" in c["message"]
    assert st["rolledBack"]["version"] == "1.1.0"
    # a Ready model stays Ready: the champion serves
    (ready,) = [c for c in st["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "True"


def test_no_challenger_no_challenger_fields() -> None:
    st = _status(None, previous={"rolledBack": {"version": "1.1.0"}, "versions": []})
    assert st["challenger"] is None and st["versions"] is None and st["rolledBack"] is None
    assert not [c for c in st["conditions"] if c["type"] == CHALLENGER]
    json.dumps(st)  # a status is plain JSON
