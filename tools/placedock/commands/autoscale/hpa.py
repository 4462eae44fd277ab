"""The Kubernetes HorizontalPodAutoscaler's algorithm, for one CPU Utilization
metric, with no cluster: the spec read from the HPA object in kubernetes/, and
the controller's arithmetic as kubernetes.io ("Horizontal Pod Autoscaling")
documents it and pkg/controller/podautoscaler (horizontal.go,
replica_calculator.go) does it:

- desired = ceil(ready replicas x current utilization / target), unless the
  ratio is within the tolerance (0.1) of 1;
- replicas are grouped as the controller groups pods: being removed or failed
  (ignored), pending or not ready (unready: 0 % of the request on a scale-up,
  left out otherwise), running without a sample (missing: 100 % of the request
  on a scale-down, 0 % on a scale-up); a replica younger than the CPU
  initialization period counts only with a sample taken wholly after it became
  ready, and an older one that has never been ready is unready during the
  initial-readiness delay;
- a change of direction after those fill-ins, or one within the tolerance, is
  no change;
- behavior: the recommendation is stabilized (the lowest of the scale-up
  window, the highest of the scale-down window, the current count between),
  then limited by the policies (Pods or Percent per period, from the count at
  the period's start; selectPolicy Max, Min or Disabled), then clamped to
  min/max.

Nothing here reads a clock or a container: callers pass `now` (seconds) and
what they observed, so the unit tests drive it with the documented cases.
"""

import math
from dataclasses import dataclass, field

import yaml

TOLERANCE = 0.1
# The controller's defaults (kube-controller-manager flags).
SYNC_PERIOD = 15.0
INITIAL_READINESS_DELAY = 30.0
CPU_INITIALIZATION_PERIOD = 300.0
DOWNSCALE_STABILIZATION = 300.0


class Refused(ValueError):
    """An HPA object this autoscaler cannot honour; the message is one line."""


@dataclass(frozen=True)
class Policy:
    kind: str  # "Pods" or "Percent"
    value: int
    period: float


@dataclass(frozen=True)
class Rules:
    window: float
    select: str  # "Max", "Min" or "Disabled"
    policies: tuple


@dataclass(frozen=True)
class Spec:
    """What the autoscaler acts on: the HPA's settings, the target's CPU request."""

    name: str
    target: str  # the Deployment it scales
    min_replicas: int
    max_replicas: int
    utilization: int  # target averageUtilization, percent of the request
    request_m: int  # the pod's CPU request, millicores (sum over its containers)
    scale_up: Rules
    scale_down: Rules


# Defaults of autoscaling/v2's behavior (kubernetes.io, "Default Behavior").
DEFAULT_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15},
        {"type": "Pods", "value": 4, "periodSeconds": 15},
    ],
}
DEFAULT_DOWN = {
    "stabilizationWindowSeconds": DOWNSCALE_STABILIZATION,
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


def millicores(value, where):
    """A Kubernetes CPU quantity ("250m", "0.25", 1) in millicores."""
    text = str(value).strip()
    try:
        if text.endswith("m"):
            return int(text[:-1])
        return round(float(text) * 1000)
    except ValueError:
        raise Refused(f"{where}: {value!r} is not a CPU quantity") from None


def _rules(given, default, where, speed):
    given = dict(given or {})
    unknown = set(given) - {"stabilizationWindowSeconds", "selectPolicy", "policies"}
    if unknown:
        raise Refused(f"{where}: cannot honour {', '.join(sorted(unknown))}")
    merged = {**default, **given}
    select = merged["selectPolicy"]
    if select not in ("Max", "Min", "Disabled"):
        raise Refused(f"{where}.selectPolicy: {select!r} is not Max, Min or Disabled")
    policies = []
    for n, policy in enumerate(merged["policies"]):
        if policy.get("type") not in ("Pods", "Percent"):
            raise Refused(f"{where}.policies[{n}].type: {policy.get('type')!r} is not Pods or Percent")
        if int(policy.get("value", 0)) <= 0 or int(policy.get("periodSeconds", 0)) <= 0:
            raise Refused(f"{where}.policies[{n}]: value and periodSeconds must be positive")
        policies.append(Policy(policy["type"], int(policy["value"]), policy["periodSeconds"] / speed))
    if not policies and select != "Disabled":
        raise Refused(f"{where}.policies: none given")
    return Rules(merged["stabilizationWindowSeconds"] / speed, select, tuple(policies))


def from_objects(objects, speed=1.0):
    """The Spec of the one HorizontalPodAutoscaler among `objects` (parsed
    manifests), with the CPU request of the Deployment it targets. `speed`
    divides every duration of its behavior (windows, policy periods): the tests
    run the same settings faster. Refused with one line when it asks for what
    this autoscaler does not do."""
    hpas = [o for o in objects if o and o.get("kind") == "HorizontalPodAutoscaler"]
    if len(hpas) != 1:
        raise Refused(f"expected one HorizontalPodAutoscaler, found {len(hpas)}")
    (hpa,) = hpas
    name = hpa.get("metadata", {}).get("name", "?")
    where = f"HorizontalPodAutoscaler/{name}"
    if hpa.get("apiVersion") != "autoscaling/v2":
        raise Refused(f"{where}: apiVersion {hpa.get('apiVersion')!r}, not autoscaling/v2")
    spec = hpa.get("spec", {})
    ref = spec.get("scaleTargetRef", {})
    if ref.get("kind") != "Deployment":
        raise Refused(f"{where}: scaleTargetRef is a {ref.get('kind')!r}; only a Deployment (the placement service)")
    metrics = spec.get("metrics") or []
    if len(metrics) != 1:
        raise Refused(f"{where}: {len(metrics)} metrics; only one, the CPU Utilization of a Resource metric")
    (metric,) = metrics
    kind = metric.get("type")
    if kind != "Resource":
        raise Refused(f"{where}: a {kind} metric cannot be read here; only Resource cpu Utilization")
    resource = metric.get("resource", {})
    target = resource.get("target", {})
    if resource.get("name") != "cpu" or target.get("type") != "Utilization":
        raise Refused(
            f"{where}: target {resource.get('name')} {target.get('type')} cannot be read here; "
            "only Resource cpu Utilization"
        )
    utilization = target.get("averageUtilization")
    if not isinstance(utilization, int) or utilization <= 0:
        raise Refused(f"{where}: averageUtilization {utilization!r} is not a positive integer")
    low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if not isinstance(high, int) or not isinstance(low, int) or not 1 <= low <= high:
        raise Refused(f"{where}: minReplicas {low!r} and maxReplicas {high!r}: want 1 <= min <= max")
    behavior = spec.get("behavior") or {}
    deployments = [
        o
        for o in objects
        if o and o.get("kind") == "Deployment" and o.get("metadata", {}).get("name") == ref.get("name")
    ]
    if len(deployments) != 1:
        raise Refused(f"{where}: its target Deployment/{ref.get('name')} is not beside it")
    request = 0
    for container in deployments[0]["spec"]["template"]["spec"]["containers"]:
        cpu = container.get("resources", {}).get("requests", {}).get("cpu")
        if cpu is None:
            raise Refused(
                f"Deployment/{ref.get('name')}: container {container.get('name')} has no cpu request, "
                "and Utilization is a share of it"
            )
        request += millicores(cpu, f"Deployment/{ref.get('name')}: container {container.get('name')}")
    return Spec(
        name=name,
        target=ref["name"],
        min_replicas=low,
        max_replicas=high,
        utilization=utilization,
        request_m=request,
        scale_up=_rules(behavior.get("scaleUp"), DEFAULT_UP, f"{where}: behavior.scaleUp", speed),
        scale_down=_rules(behavior.get("scaleDown"), DEFAULT_DOWN, f"{where}: behavior.scaleDown", speed),
    )


def load(path, speed=1.0):
    try:
        objects = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as error:
        raise Refused(f"{path}: {error}".splitlines()[0]) from None
    try:
        return from_objects(objects, speed)
    except Refused as error:
        raise Refused(f"{path}: {error}") from None


@dataclass
class Replica:
    """One replica as the controller sees a pod. phase: Running, Pending,
    Failed or Deleting. `ready` and `transition` (when readiness last changed)
    as the Ready condition; `usage_m`: its CPU sample in millicores, taken at
    `sampled` over the `window` seconds before, or None (no sample)."""

    name: str
    phase: str
    started: float | None = None
    ready: bool | None = None
    transition: float | None = None
    usage_m: float | None = None
    sampled: float | None = None
    window: float = 0.0


@dataclass(frozen=True)
class Settings:
    """The controller's own flags, divided by the same speed as the behavior."""

    sync_period: float = SYNC_PERIOD
    tolerance: float = TOLERANCE
    initial_readiness_delay: float = INITIAL_READINESS_DELAY
    cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD


def group(replicas, now, settings):
    """(ready count, unready, missing, ignored) as groupPods does for CPU."""
    ready, unready, missing, ignored = 0, set(), set(), set()
    for r in replicas:
        if r.phase in ("Deleting", "Failed"):
            ignored.add(r.name)
            continue
        if r.phase == "Pending":
            unready.add(r.name)
            continue
        if r.usage_m is None:
            missing.add(r.name)
            continue
        if r.ready is None or r.started is None or r.transition is None:
            not_ready = True
        elif r.started + settings.cpu_initialization_period > now:
            # Young: the sample counts only if taken wholly after it became ready.
            not_ready = not r.ready or r.sampled < r.transition + r.window
        else:
            # Older: unready only if it has never been ready since its start.
            not_ready = not r.ready and r.started + settings.initial_readiness_delay > r.transition
        if not_ready:
            unready.add(r.name)
        else:
            ready += 1
    return ready, unready, missing, ignored


def utilization_ratio(usage, request_m, target):
    """(usage ratio, utilization %, average usage m) of {name: millicores}, each
    replica requesting request_m: GetResourceUtilizationRatio."""
    total = sum(usage.values())
    utilization = int(total * 100 // (request_m * len(usage)))
    return utilization / target, utilization, total / len(usage)


@dataclass
class Proposal:
    """What the metric asks for, before behavior: replicas, and why."""

    replicas: int
    utilization: int | None = None  # percent of the request, over the ready replicas' samples
    average_m: float | None = None
    ready: int = 0
    unready: int = 0
    missing: int = 0
    error: str | None = None


def replicas_for_cpu(current, replicas, spec, settings, now):
    """GetResourceReplicas: the replica count the CPU samples ask for."""
    live = [r for r in replicas if r.phase not in ("Deleting", "Failed")]
    if not live:
        return Proposal(-1, error="no replicas to read")
    ready, unready, missing, ignored = group(replicas, now, settings)
    usage = {r.name: r.usage_m for r in replicas if r.name not in ignored | unready | missing}
    counts = {"ready": ready, "unready": len(unready), "missing": len(missing)}
    if not usage:
        return Proposal(-1, error="no samples of the replicas (they might be unready)", **counts)
    ratio, utilization, average = utilization_ratio(usage, spec.request_m, spec.utilization)
    proposal = Proposal(current, utilization, average, **counts)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if abs(1.0 - ratio) <= settings.tolerance:
            return proposal
        proposal.replicas = math.ceil(ratio * ready)
        return proposal
    if missing:
        if ratio < 1.0:
            fallback = max(100, spec.utilization)
            usage.update({name: spec.request_m * fallback / 100 for name in missing})
        elif ratio > 1.0:
            usage.update(dict.fromkeys(missing, 0.0))
    if scale_up_with_unready:
        usage.update(dict.fromkeys(unready, 0.0))
    new_ratio, _, _ = utilization_ratio(usage, spec.request_m, spec.utilization)
    if (
        abs(1.0 - new_ratio) <= settings.tolerance
        or (ratio < 1.0 and new_ratio > 1.0)
        or (ratio > 1.0 and new_ratio < 1.0)
    ):
        return proposal
    new = math.ceil(new_ratio * len(usage))
    if (new_ratio < 1.0 and new > current) or (new_ratio > 1.0 and new < current):
        return proposal
    proposal.replicas = new
    return proposal


# The controller's reasons for the count it sets, in its words.
SCALE_UP_LIMIT = "ScaleUpLimit: the desired replica count is increasing faster than the maximum scale rate"
TOO_MANY = "TooManyReplicas: the desired replica count is more than the maximum replica count"
SCALE_DOWN_LIMIT = "ScaleDownLimit: the desired replica count is decreasing faster than the maximum scale rate"
TOO_FEW = "TooFewReplicas: the desired replica count is less than the minimum replica count"
WITHIN_RANGE = "DesiredWithinRange: the desired count is within the acceptable range"


@dataclass
class Decision:
    current: int
    desired: int
    proposal: Proposal
    reason: str  # why desired is what it is, in the controller's words


@dataclass
class Autoscaler:
    """One HPA's controller state: its recommendations and scale events."""

    spec: Spec
    settings: Settings = field(default_factory=Settings)
    recommendations: list = field(default_factory=list)  # [(time, replicas)]
    up_events: list = field(default_factory=list)  # [(time, replicas added)]
    down_events: list = field(default_factory=list)  # [(time, replicas removed)]

    def decide(self, now, current, replicas):
        """reconcileAutoscaler: the replica count to set now."""
        spec = self.spec
        if current == 0 and spec.min_replicas != 0:
            return Decision(
                current, 0, Proposal(0), "ScalingDisabled: scaling is disabled since the replica count is 0"
            )
        if current > spec.max_replicas:
            return Decision(current, spec.max_replicas, Proposal(current), "current replicas above maxReplicas")
        if current < spec.min_replicas:
            return Decision(current, spec.min_replicas, Proposal(current), "current replicas below minReplicas")
        proposal = replicas_for_cpu(current, replicas, spec, self.settings, now)
        if proposal.replicas == -1:
            return Decision(current, current, proposal, f"FailedGetResourceMetric: {proposal.error}")
        desired, reason = self._normalize(now, current, proposal.replicas)
        if desired > current:
            why = f"cpu resource utilization (percentage of request) above target; {reason}"
        elif desired < current:
            why = f"all metrics below target; {reason}"
        else:
            why = reason
        return Decision(current, desired, proposal, why)

    def _normalize(self, now, current, proposed):
        """normalizeDesiredReplicasWithBehaviors: stabilize, then rate-limit and clamp."""
        if not self.recommendations:
            # maybeInitScaleDownStabilizationWindow: a new controller does not
            # scale down within its first window.
            self.recommendations.append((now, current))
        stabilized, reason = self._stabilize(now, current, proposed)
        limited, limit_reason = self._limit(now, current, stabilized)
        if limited != stabilized:
            return limited, limit_reason
        return limited, reason if stabilized != proposed else limit_reason

    def _stabilize(self, now, current, proposed):
        up_cutoff = now - self.spec.scale_up.window
        down_cutoff = now - self.spec.scale_down.window
        up, down = proposed, proposed
        old = None
        for n, (at, recommendation) in enumerate(self.recommendations):
            if at > up_cutoff:
                up = min(recommendation, up)
            if at > down_cutoff:
                down = max(recommendation, down)
            if at < up_cutoff and at < down_cutoff:
                old = n
        recommendation = min(max(current, up), down)
        if old is None:
            self.recommendations.append((now, proposed))
        else:
            self.recommendations[old] = (now, proposed)
        if proposed >= current:
            return recommendation, "ScaleUpStabilized: recent recommendations were lower than current one"
        return recommendation, "ScaleDownStabilized: recent recommendations were higher than current one"

    def _change(self, period, events, now):
        return sum(change for at, change in events if at > now - period)

    def _period_start(self, policy, current, now):
        return (
            current
            - self._change(policy.period, self.up_events, now)
            + self._change(policy.period, self.down_events, now)
        )

    def _rate_limit(self, rules, current, now, up):
        """calculateScaleUpLimitWithScalingRules (up) or
        calculateScaleDownLimitWithBehaviors: the furthest count from `current`
        that the policies allow now, each counted from its period's start."""
        if rules.select == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            start = self._period_start(policy, current, now)
            if policy.kind == "Pods":
                proposals.append(start + policy.value if up else start - policy.value)
            elif up:
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
            else:
                proposals.append(int(start * (1 - policy.value / 100)))
        # Max selects the policy that allows the largest change, Min the smallest.
        furthest, nearest = (max, min) if up else (min, max)
        return furthest(proposals) if rules.select == "Max" else nearest(proposals)

    def _limit(self, now, current, desired):
        spec = self.spec
        if desired > current:
            limit = max(self._rate_limit(spec.scale_up, current, now, up=True), current)
            if spec.max_replicas > limit:
                allowed, reason = limit, SCALE_UP_LIMIT
            else:
                allowed, reason = spec.max_replicas, TOO_MANY
            if desired > allowed:
                return allowed, reason
        elif desired < current:
            limit = min(self._rate_limit(spec.scale_down, current, now, up=False), current)
            if spec.min_replicas < limit:
                allowed, reason = limit, SCALE_DOWN_LIMIT
            else:
                allowed, reason = spec.min_replicas, TOO_FEW
            if desired < allowed:
                return allowed, reason
        return desired, WITHIN_RANGE

    def scaled(self, now, old, new):
        """storeScaleEvent: remember a change the target made."""
        if new > old:
            self.up_events.append((now, new - old))
        elif new < old:
            self.down_events.append((now, old - new))
        longest = max((p.period for r in (self.spec.scale_up, self.spec.scale_down) for p in r.policies), default=0)
        self.up_events = [(at, n) for at, n in self.up_events if at > now - longest]
        self.down_events = [(at, n) for at, n in self.down_events if at > now - longest]
