"""The MLModel spec as a typed model.

The CRD schema (crds/serving.n1v1.io_mlmodels.yaml) is the first line of validation and
fills defaults server-side; this model repeats the defaults and the checks so that the
builders get the same typed object whether the body came from the API server or from a
unit test, and so that a manifest that slipped past an older CRD still fails with the
field named.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import names
from .names import GROUP as GROUP
from .names import KIND as KIND
from .names import PLURAL as PLURAL
from .names import VERSION as VERSION

URI_SCHEMES = ("pvc", "http", "https", "s3", "configmap")
# The operator sets these on the runtime; a user value would contradict the pod it builds.
RESERVED_ENV = frozenset(
    {
        names.ENV_MODELS_DIR,
        names.ENV_PRELOAD_MODELS,
        names.ENV_HOST,
        names.ENV_PORT,
        names.ENV_ALLOW_UNSAFE_LOADING,
        names.ENV_CHALLENGERS,
        names.ENV_AUTH_TOKENS_DIR,
        names.ENV_AUTH_HEALTH,
        names.ENV_TLS_CERT_FILE,
        names.ENV_TLS_KEY_FILE,
    }
)
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Pod names are generated from "<deployment>-<rs hash>-" truncated to 58 characters; keeping
# the model name at most 46 keeps pod names untruncated, which the alert rules rely on.
MAX_NAME = 46
_PVC_RE = re.compile(r"^pvc://(?P<claim>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)/(?P<path>[^/].*)$")
_CM_RE = re.compile(
    r"^configmap://(?P<name>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)(/(?P<key>[-._a-zA-Z0-9]+))?$"
)
_S3_RE = re.compile(r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]/.+$")
_QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


class SpecError(ValueError):
    """A spec the operator cannot act on; the message names the field."""


class _Strict(BaseModel):
    # Unknown fields are an error: a typo in a manifest must not be silently ignored.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def parse_quantity(quantity: str | int | float) -> Decimal:
    """Kubernetes quantity -> number ("500m" -> 0.5, "1Gi" -> 1073741824)."""
    m = _QUANTITY_RE.match(str(quantity).strip())
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    num = Decimal(m["num"])
    suffix = m["suffix"] or ""
    scale: dict[str, int | Decimal] = {
        "": 1,
        "m": Decimal("0.001"),
        "u": Decimal("0.000001"),
        "n": Decimal("1e-9"),
        "k": 1000,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
        "P": 10**15,
        "E": 10**18,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "Ei": 2**60,
    }
    if suffix and suffix[0] in "eE":
        return num * (Decimal(10) ** int(suffix[1:]))
    return num * Decimal(scale[suffix])


class CABundle(_Strict):
    """A ConfigMap key holding PEM CAs that the fetch step trusts besides the public roots."""

    configMap: str = Field(
        min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )
    key: str = Field(default="ca.crt", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


#: spec.model.framework; equal to the CRD's enum and the runtime's plug-ins (a test checks)
Framework = Literal["lightgbm", "sklearn", "xgboost"]


class _Source(_Strict):
    """Where one version of the model comes from: the fields the champion, a canary and a
    shadow share."""

    version: str = Field(
        min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([A-Za-z0-9._+-]*[A-Za-z0-9])?$"
    )
    uri: str = Field(min_length=1, max_length=2048)
    sha256: str | None = Field(default=None, pattern=r"^[a-f0-9]{64}$")

    @field_validator("uri")
    @classmethod
    def _scheme(cls, v: str) -> str:
        scheme = v.split("://", 1)[0] if "://" in v else ""
        if scheme not in URI_SCHEMES or not v.split("://", 1)[1]:
            raise ValueError(
                "must start with one of pvc://, http://, https://, s3://, configmap://"
            )
        if scheme == "pvc" and not _PVC_RE.match(v):
            raise ValueError("a pvc:// URI must be pvc://<claim-name>/<path inside the volume>")
        if scheme == "configmap" and not _CM_RE.match(v):
            raise ValueError(
                "a configmap:// URI must be configmap://<name> or configmap://<name>/<key>"
            )
        if scheme == "s3" and not _S3_RE.match(v):
            raise ValueError("an s3:// URI must be s3://<bucket>/<key>")
        return v

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    def pvc(self) -> tuple[str, str] | None:
        """(claim, path) for pvc:// URIs."""
        m = _PVC_RE.match(self.uri)
        return (m["claim"], m["path"]) if m else None

    def configmap(self) -> tuple[str, str | None] | None:
        """(configmap name, key or None) for configmap:// URIs."""
        m = _CM_RE.match(self.uri)
        return (m["name"], m["key"]) if m else None


class ModelSource(_Source):
    framework: Framework
    #: the name the runtime serves the model under, when it differs from metadata.name
    #: (`your_model`, `Fraud.v2`: what requests and metrics call it); default metadata.name
    name: str | None = Field(default=None, min_length=1,
                             max_length=names.SERVED_NAME_MAX_LENGTH,
                             pattern=names.SERVED_NAME_PATTERN)
    credentialsSecret: str | None = Field(default=None, max_length=253)
    caBundle: CABundle | None = None
    allowUnsafeLoading: bool = False


class Shadow(_Source):
    """A challenger evaluated on every request after the answer, never returned
    (docs/rollouts.md). Fetched with spec.model's credentials and CA bundle."""

    #: default: spec.model.framework (an A/B of two frameworks is allowed)
    framework: Framework | None = None

    @property
    def mode(self) -> Literal["canary", "shadow"]:
        return "shadow"


class Canary(Shadow):
    """A challenger that answers `weight` percent of the requests, picked by a hash of the
    correlation id, and is rolled back when it fails its load, its golden sample or its
    limits."""

    weight: int = Field(ge=0, le=100)
    maxErrorRatePercent: float | None = Field(default=None, ge=0, le=100)
    maxLatencyP95Milliseconds: int | None = Field(default=None, ge=1, le=600000)
    minRequests: int = Field(default=100, ge=1, le=1000000)

    @property
    def mode(self) -> Literal["canary", "shadow"]:
        return "canary"


class Autoscaling(_Strict):
    enabled: bool = False
    minReplicas: int = Field(default=1, ge=1, le=100)
    maxReplicas: int = Field(default=5, ge=1, le=100)
    targetCPUUtilizationPercentage: int = Field(default=70, ge=1, le=100)
    targetMemoryUtilizationPercentage: int = Field(default=80, ge=1, le=100)
    targetLatencyMilliseconds: int | None = Field(default=None, ge=1, le=60000)
    # Kubernetes' own default; a latency-bound service may want replicas back sooner.
    scaleDownStabilizationSeconds: int = Field(default=300, ge=0, le=3600)

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.minReplicas > self.maxReplicas:
            raise ValueError("minReplicas must be less than or equal to maxReplicas")
        return self


DEFAULT_REQUESTS = {"cpu": "500m", "memory": "512Mi"}
DEFAULT_LIMITS = {"memory": "1Gi"}


class Resources(_Strict):
    """Container resources. Both unset: requests cpu 500m / memory 512Mi, limit memory 1Gi.

    A missing cpu or memory request is filled from the matching limit (as Kubernetes does),
    else from the default, because the HPA's utilization targets need both requests.
    """

    requests: dict[str, str] | None = None
    limits: dict[str, str] | None = None

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _quantities(cls, v: Any) -> dict[str, str] | None:
        if v is None:
            return None
        if not isinstance(v, dict):
            raise ValueError("must be a map of resource name to quantity")
        out: dict[str, str] = {}
        for k, q in v.items():
            if k not in ("cpu", "memory", "ephemeral-storage"):
                raise ValueError(f"may only name cpu, memory, ephemeral-storage (got {k!r})")
            if not _QUANTITY_RE.match(str(q)):
                raise ValueError(f"{k}: not a Kubernetes quantity: {q!r}")
            out[k] = str(q)
        return out

    @model_validator(mode="after")
    def _request_le_limit(self) -> Resources:
        req, lim = self.effective()
        for k in ("cpu", "memory"):
            if k in req and k in lim and parse_quantity(req[k]) > parse_quantity(lim[k]):
                raise ValueError(f"requests.{k} ({req[k]}) must not exceed limits.{k} ({lim[k]})")
        return self

    def effective(self) -> tuple[dict[str, str], dict[str, str]]:
        """(requests, limits) as they go into the container."""
        if self.requests is None and self.limits is None:
            return dict(DEFAULT_REQUESTS), dict(DEFAULT_LIMITS)
        limits = dict(self.limits or {})
        requests = dict(self.requests or {})
        for k, default in DEFAULT_REQUESTS.items():
            requests.setdefault(k, limits.get(k, default))
        return requests, limits

    def cpu_cores(self) -> Decimal:
        """CPUs the pod can use: the limit when set (a hard cap), else the request."""
        requests, limits = self.effective()
        return parse_quantity(limits.get("cpu", requests["cpu"]))


class EnvVar(_Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str | None = None
    valueFrom: dict[str, Any] | None = None


class Toleration(_Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None


_SECRET_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class LabelRequirement(_Strict):
    key: str = Field(min_length=1, max_length=317, pattern=_LABEL_KEY)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _values(self) -> LabelRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(_Strict):
    matchLabels: dict[str, str] = Field(default_factory=dict, max_length=32)

    @field_validator("matchLabels")
    @classmethod
    def _label_values(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if len(value) > 63:
                raise ValueError(f"label value of {key} is longer than 63 characters")
        return v
    matchExpressions: list[LabelRequirement] = Field(default_factory=list, max_length=32)

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.matchLabels:
            out["matchLabels"] = dict(self.matchLabels)
        if self.matchExpressions:
            out["matchExpressions"] = [
                {"key": e.key, "operator": e.operator,
                 **({"values": list(e.values)} if e.values else {})}
                for e in self.matchExpressions
            ]
        return out


def _network(v: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise ValueError(f"{v!r} is not a CIDR such as 10.0.0.0/8") from None


class IPBlock(_Strict):
    cidr: str = Field(min_length=1, max_length=49)
    except_: list[str] = Field(default_factory=list, alias="except", max_length=32)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        _network(v)
        return v

    @model_validator(mode="after")
    def _except_inside(self) -> IPBlock:
        # The API server refuses the NetworkPolicy otherwise: caught here, before any pod
        block = _network(self.cidr)
        for e in self.except_:
            net = _network(e)
            if net.version != block.version or not net.subnet_of(block):  # type: ignore[arg-type]
                raise ValueError(f"except {e!r} is not inside cidr {self.cidr!r}")
        return self


class Peer(_Strict):
    """One allowed caller: NetworkPolicyPeer semantics. Only podSelector = pods of the
    MLModel's namespace; namespaceSelector (+ podSelector) = pods of those namespaces;
    ipBlock = addresses outside the cluster's pods (a trading engine on a VM)."""

    namespaceSelector: LabelSelector | None = None
    podSelector: LabelSelector | None = None
    ipBlock: IPBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Peer:
        selectors = self.namespaceSelector is not None or self.podSelector is not None
        if self.ipBlock is not None and selectors:
            raise ValueError("a peer is either an ipBlock or selectors, not both")
        if self.ipBlock is None and not selectors:
            raise ValueError("a peer needs namespaceSelector, podSelector or ipBlock")
        return self

    def manifest(self) -> dict[str, Any]:
        if self.ipBlock is not None:
            block: dict[str, Any] = {"cidr": self.ipBlock.cidr}
            if self.ipBlock.except_:
                block["except"] = list(self.ipBlock.except_)
            return {"ipBlock": block}
        out: dict[str, Any] = {}
        if self.namespaceSelector is not None:
            out["namespaceSelector"] = self.namespaceSelector.manifest()
        if self.podSelector is not None:
            out["podSelector"] = self.podSelector.manifest()
        return out


#: the default of spec.serving.networkPolicy.allowedFrom: every pod of the MLModel's namespace
OWN_NAMESPACE = (Peer(podSelector=LabelSelector()),)


class NetworkPolicy(_Strict):
    """Who may reach the runtime's ports, and where its pods may connect (docs/security.md)."""

    enabled: bool = True
    # None: the default (the own namespace); [] : nobody but the scrapers and the operator
    allowedFrom: list[Peer] | None = Field(default=None, max_length=32)
    # TCP ports the fetch step may reach besides those of the model URIs (an s3 endpoint
    # on its own port)
    fetchPorts: list[int] = Field(default_factory=list, max_length=16)

    @field_validator("fetchPorts")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        for p in v:
            if not 1 <= p <= 65535:
                raise ValueError(f"port {p} is not in 1..65535")
        return v

    @property
    def callers(self) -> tuple[Peer, ...]:
        return OWN_NAMESPACE if self.allowedFrom is None else tuple(self.allowedFrom)


class Auth(_Strict):
    """Bearer tokens and TLS on the runtime's ports (docs/security.md)."""

    # a Secret: every key is one accepted token (several keys: rotation without a gap)
    tokenSecret: str | None = Field(default=None, min_length=1, max_length=253,
                                    pattern=_SECRET_NAME)
    # a kubernetes.io/tls Secret (tls.crt, tls.key): HTTPS and gRPC over TLS
    tlsSecret: str | None = Field(default=None, min_length=1, max_length=253,
                                  pattern=_SECRET_NAME)


class Serving(_Strict):
    image: str | None = Field(default=None, max_length=512)
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    replicas: int = Field(default=1, ge=0, le=100)
    workers: int | None = Field(default=None, ge=1, le=64)
    progressDeadlineSeconds: int = Field(default=600, ge=10, le=3600)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    resources: Resources = Field(default_factory=Resources)
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    networkPolicy: NetworkPolicy = Field(default_factory=NetworkPolicy)
    auth: Auth = Field(default_factory=Auth)

    @field_validator("env")
    @classmethod
    def _env(cls, v: list[EnvVar]) -> list[EnvVar]:
        seen: set[str] = set()
        for e in v:
            if e.name in RESERVED_ENV:
                raise ValueError(f"may not set {e.name}: the operator owns it")
            if e.name in seen:
                raise ValueError(f"duplicate name {e.name}")
            seen.add(e.name)
        return v


class Alerting(_Strict):
    enabled: bool = True
    latencyP95ThresholdMilliseconds: int = Field(default=100, ge=1, le=600000)
    errorRateThresholdPercent: float = Field(default=1.0, gt=0, le=100)
    # 4xx count as failed too: the engine got no prediction (docs/alerts.md)
    countClientErrors: bool = True
    for_: str = Field(default="5m", alias="for")
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("for_")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not _DURATION_RE.match(v):
            raise ValueError("must be a Prometheus duration such as 30s, 5m, 1h")
        return v


class MLModelSpec(_Strict):
    model: ModelSource
    canary: Canary | None = None
    shadow: Shadow | None = None
    serving: Serving = Field(default_factory=Serving)
    alerting: Alerting = Field(default_factory=Alerting)

    @model_validator(mode="after")
    def _one_challenger(self) -> MLModelSpec:
        if self.canary is not None and self.shadow is not None:
            raise ValueError("canary and shadow cannot both be set: a model has one "
                             "challenger at a time")
        ch = self.challenger
        if ch is not None and ch.version == self.model.version:
            raise ValueError(f"{ch.mode}.version must differ from model.version "
                             f"({ch.version}): answers and metrics tell versions apart by it")
        return self

    @property
    def challenger(self) -> Canary | Shadow | None:
        return self.canary if self.canary is not None else self.shadow

    def challenger_framework(self) -> str | None:
        ch = self.challenger
        return None if ch is None else ch.framework or self.model.framework

    def served_name(self, object_name: str) -> str:
        """The model's name in the runtime (fetch --name, PRELOAD_MODELS, /predict's
        model_name, the model_name metric label): spec.model.name, else metadata.name."""
        return self.model.name or object_name


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = ["spec"]
    for p in loc:
        if isinstance(p, int):
            parts[-1] += f"[{p}]"
        else:
            parts.append("for" if p == "for_" else str(p))
    return ".".join(parts)


def parse_spec(spec: dict[str, Any] | None) -> MLModelSpec:
    """Parse an MLModel .spec; raise SpecError naming the offending field."""
    try:
        return MLModelSpec.model_validate(dict(spec or {}))
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            loc = tuple(
                p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))
            )
            msg = err["msg"].removeprefix("Value error, ")
            msgs.append(f"{_field_path(loc)}: {msg}")
        raise SpecError("; ".join(msgs)) from None


def check_name(name: str) -> None:
    if not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise SpecError(
            f"metadata.name: {name!r} must be a DNS-1035 label of at most {MAX_NAME} characters"
        )
