"""placedock autoscale without a stack: the HPA algorithm against the cases
kubernetes.io ("Horizontal Pod Autoscaling") documents and the controller's
code decides (tolerance, min/max, policies, stabilization, unready and missing
replicas), the HPA object read from kubernetes/ and refused where it asks for
what cannot be honoured, and the cgroup v1 and v2 readings."""

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml
from placedock.commands.autoscale import hpa, observe, timeline
from placedock.commands.autoscale.hpa import Autoscaler, Policy, Replica, Rules, Settings, Spec

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "kubernetes" / "base" / "placement.yaml"
NOW = 10_000.0
OLD = NOW - 3600  # started long ago: past every initialization period


def spec(**changes):
    """The repo's HPA (min 1, max 10, 50 % of 250m, up 2 pods / 30 s, down 1 pod / 60 s after 300 s)."""
    return dataclasses.replace(hpa.load(MANIFEST), **changes)


def running(n, usage_m, started=OLD, prefix="r"):
    return [
        Replica(f"{prefix}{i}", "Running", started=started, ready=True, transition=started + 5, usage_m=usage_m,
                sampled=NOW, window=15.0)
        for i in range(n)
    ]  # fmt: skip


DEFAULTS = Settings()


def proposal(replicas, current=None, the_spec=None, settings=DEFAULTS):
    current = len(replicas) if current is None else current
    return hpa.replicas_for_cpu(current, replicas, the_spec or spec(), settings, NOW)


def test_the_repos_hpa_is_read_as_written():
    s = hpa.load(MANIFEST)
    assert (s.name, s.target, s.min_replicas, s.max_replicas, s.utilization, s.request_m) == (
        "placement", "placement", 1, 10, 50, 250,
    )  # fmt: skip
    assert s.scale_up == Rules(0, "Max", (Policy("Pods", 2, 30),))
    assert s.scale_down == Rules(300, "Max", (Policy("Pods", 1, 60),))


def test_speed_divides_every_window_and_period():
    s = hpa.load(MANIFEST, speed=10)
    assert s.scale_down == Rules(30, "Max", (Policy("Pods", 1, 6),))
    assert s.scale_up.policies == (Policy("Pods", 2, 3),)


def test_compose_limit_is_the_deployments_request():
    """One source: compose.autoscale.yaml's limit is the request the HPA's utilization is a share of."""
    override = yaml.safe_load((ROOT / "compose.autoscale.yaml").read_text())
    limit = override["services"]["placement"]["deploy"]["resources"]["limits"]["cpus"]
    assert hpa.millicores(limit, "compose") == hpa.load(MANIFEST).request_m


def test_desired_is_ceil_of_ready_times_the_ratio():
    # 2 replicas at 100 % of a 250m request, target 50 %: ratio 2 -> 4.
    assert proposal(running(2, 250)).replicas == 4
    # 3 at 60 %: ratio 1.2 -> ceil(3.6) = 4.
    assert proposal(running(3, 150)).replicas == 4
    # 4 at 20 %: ratio 0.4 -> ceil(1.6) = 2.
    assert proposal(running(4, 50)).replicas == 2


def test_within_the_tolerance_nothing_changes():
    # 54 % and 46 % of the request against 50 %: ratios 1.08 and 0.92.
    assert proposal(running(3, 135)).replicas == 3
    assert proposal(running(3, 115)).replicas == 3
    # 56 %: 1.12, outside.
    assert proposal(running(3, 140)).replicas == 4


def test_utilization_is_integer_percent_of_the_request():
    p = proposal(running(2, 100))
    assert (p.utilization, p.average_m) == (40, 100)


def test_unready_replicas_count_zero_on_a_scale_up():
    # 1 ready at 100 % (ratio 2) and 1 still starting: with the starting one at 0 %
    # the ratio is 1.0 -> within tolerance: no change (the docs' example of dampening).
    replicas = running(1, 250) + [Replica("new", "Pending")]
    assert proposal(replicas, current=2).replicas == 2
    # 2 ready at 100 % and 1 pending: ratio over 3 at 0 for the new = 1.33 -> ceil(4) = 4.
    replicas = running(2, 250) + [Replica("new", "Pending")]
    assert proposal(replicas, current=3).replicas == 4


def test_unready_replicas_are_left_out_on_a_scale_down():
    # Starting, busy loading its app: a sample, but not ready.
    new = Replica("new", "Running", started=NOW - 10, ready=False, transition=NOW - 10, usage_m=250, sampled=NOW)
    p = proposal(running(4, 25) + [new], current=5)
    assert (p.unready, p.ready) == (1, 4)
    # 4 ready at 10 % (ratio 0.2): ceil(0.8) = 1; the busy starter does not hold the count up.
    assert p.replicas == 1
    # With no sample yet it is missing instead: 100 % on the way down, (4 x 10 + 100) / 5 = 28 % -> ceil(2.8).
    new.usage_m = None
    assert proposal(running(4, 25) + [new], current=5).replicas == 3


def test_missing_samples_count_as_the_full_request_on_a_scale_down():
    # 2 at 10 % plus 2 with no sample: those count as 100 % -> (10+10+100+100)/4 = 55 % -> 1.1: no change.
    replicas = running(2, 25) + [Replica(f"m{i}", "Running", started=OLD, ready=True, transition=OLD) for i in range(2)]
    assert proposal(replicas).replicas == 4
    # 3 at 10 % and 1 missing: (30+100)/4 = 32.5 % -> 0.65 -> ceil(2.6) = 3.
    replicas = running(3, 25) + [Replica("m", "Running", started=OLD, ready=True, transition=OLD)]
    assert proposal(replicas).replicas == 3


def test_missing_samples_count_zero_on_a_scale_up():
    # 1 at 200 % and 1 missing: (200+0)/2 = 100 % -> ratio 2 -> 4.
    replicas = running(1, 500) + [Replica("m", "Running", started=OLD, ready=True, transition=OLD)]
    assert proposal(replicas).replicas == 4


def test_a_fill_in_that_turns_the_direction_is_no_change():
    # 1 at 60 % (ratio 1.2, up), 1 missing at 0 -> 30 % (0.6, down): the direction turned.
    replicas = running(1, 150) + [Replica("m", "Running", started=OLD, ready=True, transition=OLD)]
    assert proposal(replicas).replicas == 2


def test_a_young_replicas_sample_counts_only_once_taken_after_it_was_ready():
    young = NOW - 20
    # Ready 10 s ago, sample over the last 15 s: begun before it was ready -> unready.
    early = Replica("y", "Running", started=young, ready=True, transition=NOW - 10, usage_m=250, sampled=NOW, window=15)
    assert hpa.group([early], NOW, Settings())[1] == {"y"}
    # Ready 16 s ago: the sample is wholly after -> ready.
    later = Replica("y", "Running", started=young, ready=True, transition=NOW - 16, usage_m=250, sampled=NOW, window=15)
    assert hpa.group([later], NOW, Settings())[0] == 1


def test_an_old_replica_never_ready_is_unready_only_within_the_readiness_delay():
    started = NOW - 1000
    # Not ready since 20 s after its start (within the 30 s delay): it never was ready -> unready.
    never = Replica("n", "Running", started=started, ready=False, transition=started + 20, usage_m=10, sampled=NOW)
    assert hpa.group([never], NOW, Settings())[1] == {"n"}
    # Not ready since 500 s after its start: it was ready before -> its sample counts.
    lapsed = Replica("n", "Running", started=started, ready=False, transition=started + 500, usage_m=10, sampled=NOW)
    assert hpa.group([lapsed], NOW, Settings())[0] == 1


def test_removed_and_failed_replicas_are_ignored():
    replicas = running(2, 250) + [Replica("gone", "Deleting", usage_m=0), Replica("dead", "Failed")]
    p = proposal(replicas, current=2)
    assert (p.replicas, p.ready, p.unready, p.missing) == (4, 2, 0, 0)


def test_no_sample_at_all_is_an_error_and_no_change():
    a = Autoscaler(spec())
    d = a.decide(NOW, 2, [Replica("a", "Pending"), Replica("b", "Pending")])
    assert d.desired == 2 and d.reason.startswith("FailedGetResourceMetric")
    assert a.recommendations == []


def test_max_and_min_clamp():
    a = Autoscaler(spec(max_replicas=3, scale_up=Rules(0, "Max", (Policy("Pods", 10, 15),))))
    d = a.decide(NOW, 2, running(2, 1000))
    assert d.desired == 3 and "TooManyReplicas" in d.reason
    b = Autoscaler(spec(min_replicas=2, scale_down=Rules(0, "Max", (Policy("Percent", 100, 15),))))
    d = b.decide(NOW, 4, running(4, 0))
    assert d.desired == 2 and "TooFewReplicas" in d.reason


def test_outside_min_max_the_count_is_brought_in_first():
    a = Autoscaler(spec(min_replicas=2))
    assert a.decide(NOW, 1, running(1, 0)).desired == 2
    assert a.decide(NOW, 12, running(12, 0)).desired == 10


def test_zero_replicas_means_scaling_is_disabled():
    d = Autoscaler(spec()).decide(NOW, 0, [])
    assert d.desired == 0 and d.reason.startswith("ScalingDisabled")


def test_scale_up_policy_counts_from_the_periods_start():
    a = Autoscaler(spec())  # up: 2 pods per 30 s
    d = a.decide(NOW, 1, running(1, 1000))  # ratio 8 -> 8
    assert d.desired == 3 and "ScaleUpLimit" in d.reason
    a.scaled(NOW, 1, 3)
    # 20 s later, 3 at 100 %: wants 6, but the period began at 1: 1 + 2 = 3.
    assert a.decide(NOW + 20, 3, running(3, 250)).desired == 3
    # 31 s later the period has moved on: 3 + 2 = 5.
    assert a.decide(NOW + 31, 3, running(3, 250)).desired == 5


def test_percent_policies_round_up_and_select_max_or_min():
    rules = (Policy("Percent", 100, 15), Policy("Pods", 4, 15))  # the default scale-up
    a = Autoscaler(spec(scale_up=Rules(0, "Max", rules)))
    assert a.decide(NOW, 2, running(2, 1000)).desired == 6  # max(2*2, 2+4)
    b = Autoscaler(spec(scale_up=Rules(0, "Min", rules)))
    assert b.decide(NOW, 2, running(2, 1000)).desired == 4  # min(4, 6)
    c = Autoscaler(spec(scale_up=Rules(0, "Max", (Policy("Percent", 10, 15),))))
    assert c.decide(NOW, 3, running(3, 1000)).desired == 4  # ceil(3.3)
    d = Autoscaler(spec(scale_up=Rules(0, "Disabled", ())))
    assert d.decide(NOW, 2, running(2, 1000)).desired == 2


def test_scale_down_waits_out_the_stabilization_window():
    a = Autoscaler(spec(scale_down=Rules(300, "Max", (Policy("Percent", 100, 15),))))
    # A new controller records the current count: no scale-down within its first window.
    d = a.decide(NOW, 4, running(4, 0))
    assert d.desired == 4 and d.reason.startswith("ScaleDownStabilized")
    # Still idle 200 s later: the highest recommendation of the last 300 s is still 4.
    assert a.decide(NOW + 200, 4, running(4, 0)).desired == 4
    # 301 s later the first recommendation has left the window.
    assert a.decide(NOW + 301, 4, running(4, 0)).desired == 1


def test_a_burst_within_the_window_holds_the_count():
    a = Autoscaler(spec(scale_down=Rules(60, "Max", (Policy("Pods", 10, 15),))))
    a.recommendations.append((NOW - 100, 1))
    assert a.decide(NOW, 5, running(5, 125)).desired == 5  # at target: recommends 5
    assert a.decide(NOW + 30, 5, running(5, 0)).desired == 5  # idle, but 5 was recommended 30 s ago
    assert a.decide(NOW + 61, 5, running(5, 0)).desired == 1


def test_scale_down_policy_one_pod_a_period():
    a = Autoscaler(spec(scale_down=Rules(0, "Max", (Policy("Pods", 1, 60),))))
    d = a.decide(NOW, 5, running(5, 0))
    assert d.desired == 4 and "ScaleDownLimit" in d.reason
    a.scaled(NOW, 5, 4)
    assert a.decide(NOW + 30, 4, running(4, 0)).desired == 4  # the period began at 5
    assert a.decide(NOW + 61, 4, running(4, 0)).desired == 3


def test_scale_down_percent_truncates_and_min_select_takes_the_smaller_change():
    rules = (Policy("Percent", 50, 15), Policy("Pods", 1, 15))
    a = Autoscaler(spec(scale_down=Rules(0, "Max", rules)))
    assert a.decide(NOW, 5, running(5, 0)).desired == 2  # min(int(2.5), 4)
    b = Autoscaler(spec(scale_down=Rules(0, "Min", rules)))
    assert b.decide(NOW, 5, running(5, 0)).desired == 4


def hpa_objects():
    return list(yaml.safe_load_all(MANIFEST.read_text()))


def the_hpa(objects):
    return next(o for o in objects if o and o["kind"] == "HorizontalPodAutoscaler")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda h: h["spec"]["metrics"].__setitem__(0, {"type": "External", "external": {}}), "a External metric"),
        (lambda h: h["spec"]["metrics"][0]["resource"].__setitem__("name", "memory"), "target memory Utilization"),
        (
            lambda h: h["spec"]["metrics"][0]["resource"].__setitem__(
                "target", {"type": "AverageValue", "averageValue": "100m"}
            ),
            "target cpu AverageValue",
        ),
        (lambda h: h["spec"]["metrics"].append(h["spec"]["metrics"][0]), "2 metrics"),
        (lambda h: h.__setitem__("apiVersion", "autoscaling/v2beta2"), "not autoscaling/v2"),
        (lambda h: h["spec"].__setitem__("minReplicas", 0), "want 1 <= min <= max"),
        (lambda h: h["spec"]["behavior"]["scaleUp"].__setitem__("tolerance", "0.05"), "cannot honour tolerance"),
        (lambda h: h["spec"]["behavior"]["scaleDown"]["policies"][0].__setitem__("type", "Nodes"), "'Nodes' is not"),
        (lambda h: h["spec"]["scaleTargetRef"].__setitem__("kind", "StatefulSet"), "only a Deployment"),
    ],
)
def test_an_hpa_it_cannot_honour_is_refused_in_one_line(change, words):
    objects = copy.deepcopy(hpa_objects())
    change(the_hpa(objects))
    with pytest.raises(hpa.Refused) as refused:
        hpa.from_objects(objects)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_a_deployment_without_a_cpu_request_is_refused():
    objects = copy.deepcopy(hpa_objects())
    deployment = next(o for o in objects if o and o["kind"] == "Deployment")
    del deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    with pytest.raises(hpa.Refused, match="has no cpu request"):
        hpa.from_objects(objects)


def test_no_behavior_takes_the_documented_defaults():
    objects = copy.deepcopy(hpa_objects())
    del the_hpa(objects)["spec"]["behavior"]
    s = hpa.from_objects(objects)
    assert s.scale_up == Rules(0, "Max", (Policy("Percent", 100, 15), Policy("Pods", 4, 15)))
    assert s.scale_down == Rules(300, "Max", (Policy("Percent", 100, 15),))


def test_quantities():
    assert [hpa.millicores(v, "x") for v in ("250m", "0.25", 1, "1.5")] == [250, 250, 1000, 1500]
    with pytest.raises(hpa.Refused):
        hpa.millicores("a quarter", "x")


def test_samples_give_millicores_over_the_window():
    samples = observe.Samples()
    assert samples.sample("a", 1_000_000_000, 100.0) == (None, 0.0)
    assert samples.sample("a", 1_750_000_000, 103.0) == (250.0, 3.0)  # 0.75 s of CPU in 3 s
    samples.begin()
    assert samples.sample("a", None, 106.0) == (None, 0.0) and samples.unread == {"a"}


def test_httplog_lines_of_the_placement_backend_only():
    lines = (
        "172.18.0.1:35980 [05/Dec/2026:04:14:36.994] placement placement/placement-2 0/0/1/21/22 200 369 - - "
        '---- 4/4/3/3/0 0/0 "GET /traits HTTP/1.0"\n'
        "172.18.0.1:35981 [05/Dec/2026:04:14:37.100] placement placement/<NOSRV> 0/-1/-1/-1/3 503 222 - - "
        'SC-- 1/1/0/0/0 0/0 "GET / HTTP/1.1"\n'
        "172.18.0.1:35982 [05/Dec/2026:04:14:37.200] stats stats/<STATS> 0/0/0/0/0 200 100 - - "
        '---- 1/1/0/0/0 0/0 "GET /stats HTTP/1.1"\n'
        "[WARNING]  (11) : Server placement/placement-3 is UP/READY (resolves again).\n"
    )
    # A request the front door answered itself (no replica UP) counts too.
    assert observe.parse_httplog(lines) == [(200, 22), (503, 3)]
    since = observe.haproxy_time("05/Dec/2026:04:14:36.000")
    assert observe.parse_httplog(lines, since=since, until=since + 0.5) == []


def test_docker_times():
    assert observe.docker_time("2026-12-05T04:14:36.123456789Z") == pytest.approx(
        observe.haproxy_time("05/Dec/2026:04:14:36.123"), abs=0.001
    )
    assert observe.docker_time("0001-01-01T00:00:00Z") is None
    assert observe.docker_time("") is None


def test_p95_nearest_rank():
    assert timeline.p95([]) is None
    assert timeline.p95(list(range(1, 101))) == 95
    assert timeline.p95([7]) == 7


def test_spec_is_frozen():
    s = hpa.load(MANIFEST)
    assert isinstance(s, Spec)
    with pytest.raises(AttributeError):
        s.min_replicas = 3


def test_readiness_takes_the_replicas_own_time_of_change_when_it_can():
    seen = observe.Readiness()
    assert seen.note("a", False, 100.0, since=90.0) == 90.0  # first look: its record
    assert seen.note("a", False, 103.0, since=90.0) == 90.0
    assert seen.note("a", True, 106.0, since=104.5) == 104.5  # changed between the looks
    assert seen.note("a", True, 109.0, since=104.5) == 104.5
    assert seen.note("a", False, 112.0, since=None) == 112.0  # no record: this look
    assert seen.note("a", True, 115.0, since=50.0) == 115.0  # a record older than the last look is not it


class FakeTarget:
    """A compose project in memory: `replicas` at `usage_m` each, or unreadable."""

    reference = "fake/placement"

    def __init__(self, count, usage_m, readable=True):
        self.count, self.usage_m, self.readable = count, usage_m, readable
        self.samples = observe.Samples()
        self.scaled_to = []

    def current(self, replicas):
        return self.count

    def cpu_limit_m(self):
        return 250

    def replicas(self, now):
        self.samples.begin()
        found = []
        for i in range(self.count):
            name = f"r{i}"
            cpu = int(self.usage_m * 1e6 * now) if self.readable else None
            usage, window = self.samples.sample(name, cpu, now)
            found.append(Replica(name, "Running", OLD, True, OLD, usage, now, window))
        return found

    def scale(self, replicas):
        self.scaled_to.append(replicas)
        self.count = replicas

    def requests(self, since, until):
        return [(200, 5)] * 10


def run_loop(target, seconds, tmp_path):
    import argparse
    import threading

    from placedock.commands.autoscale import cli

    args = argparse.Namespace(hpa=MANIFEST, speed=1.0, csv=tmp_path / "t.csv", png=None, duration=seconds)
    config = Settings(sync_period=0.05)
    cli.loop(hpa.load(MANIFEST), config, target, args, threading.Event())
    return (tmp_path / "t.csv").read_text().splitlines()


def test_the_loop_scales_the_target_and_writes_a_row_per_sync(tmp_path):
    target = FakeTarget(1, 250)  # 100 % of the request: ratio 2
    rows = run_loop(target, 0.3, tmp_path)
    assert target.scaled_to[0] == 2  # ceil(2 x 1), within 2 pods a period
    assert rows[0].startswith("t,replicas,ready,sampled,desired,utilization_pct")
    assert len(rows) >= 4 and rows[1].split(",")[1:5] == ["1", "1", "1", "2"]


def test_the_loop_stops_with_one_line_when_no_cgroup_can_be_read(tmp_path):
    with pytest.raises(observe.Unreadable, match="cannot read the CPU of any replica"):
        run_loop(FakeTarget(2, 0, readable=False), 5, tmp_path)


def test_a_png_without_matplotlib_is_refused_before_anything_runs(monkeypatch):
    from placedock.commands.autoscale import cli

    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    args = cli.build_parser().parse_args(["--project", "placedock-none", "--png", "timeline.png"])
    with pytest.raises(hpa.Refused, match=r"--png draws with matplotlib: pip install .*tools\[plot\]"):
        cli.prepare(args)


def test_a_swarm_without_the_service_is_refused_in_one_line(monkeypatch, capsys):
    from placedock.commands.autoscale import cli

    monkeypatch.setattr(observe.swarm, "manager", lambda *args, **kwargs: "")
    assert cli.main(["--swarm"]) == 2
    assert capsys.readouterr().err == (
        "autoscale: no service placedock_placement on the swarm (placedock swarm deploy first)\n"
    )
