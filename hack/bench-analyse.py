#!/usr/bin/env python3
"""Reads the API server's audit log for hack/bench.sh.

  bench-analyse.py extract AUDIT_LOG RUN_JSON  > audit.jsonl
      keeps the operator's own requests and the admin's triggers (RoleBinding
      deletes, namespace creates), the few fields needed, so a run's evidence
      stays small enough to keep.
  bench-analyse.py report RUNS_DIR OUT_JSON
      one table per scenario, both operators and the ratio
      teamaccess / rbac-manager per figure, on stdout; the same as JSON.

Every time is the API server's (stageTimestamp: when the write took effect),
so neither operator's own logging is trusted.
"""
import json
import os
import platform
import sys
from datetime import datetime

WRITES = {"create", "update", "patch", "delete", "deletecollection"}
OK = {200, 201}
OPERATORS = ("teamaccess", "rbac-manager")


def ts(s):
    # the audit log has microseconds and a Z; fromisoformat wants an offset
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def extract(audit_log, run_json):
    run = json.load(open(run_json))
    user = run["user"]
    with open(audit_log) as f:
        for line in f:
            e = json.loads(line)
            ref = e.get("objectRef") or {}
            who = e["user"]["username"]
            res, verb = ref.get("resource"), e["verb"]
            trigger = (verb == "delete" and res == "rolebindings") or (verb == "create" and res == "namespaces")
            if who != user and not trigger:
                continue
            print(json.dumps({
                "own": who == user,
                "verb": verb,
                "resource": res,
                "subresource": ref.get("subresource"),
                "namespace": ref.get("namespace"),
                "name": ref.get("name"),
                "code": (e.get("responseStatus") or {}).get("code"),
                "received": e["requestReceivedTimestamp"],
                "stage": e["stageTimestamp"],
            }))


def percentile(xs, p):
    """Nearest rank: p99 of 200 values is the 198th, a real observation."""
    if not xs:
        return None
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(-(-p * len(xs) // 100)) - 1))
    return xs[k]


def by_verb(events):
    out = {}
    for e in events:
        out[e["verb"]] = out.get(e["verb"], 0) + 1
    return dict(sorted(out.items()))


def latencies(triggers, own_writes, key):
    """For each trigger, the time to the operator's first successful
    RoleBinding write with the same key at or after it, in ms."""
    writes = {}
    for w in own_writes:
        writes.setdefault(key(w), []).append(w["t"])
    out, missing = [], 0
    for t in triggers:
        later = [x for x in writes.get(key(t), []) if x >= t["t"]]
        if later:
            out.append((min(later) - t["t"]) * 1000)
        else:
            missing += 1
    return out, missing


def analyse(run_dir):
    run = json.load(open(os.path.join(run_dir, "run.json")))
    events = [json.loads(line) for line in open(os.path.join(run_dir, "audit.jsonl"))]
    for e in events:
        e["t"] = ts(e["stage"])
        e["r"] = ts(e["received"])
    started, idle_from, idle_to = ts(run["started"]), ts(run["idle_from"]), ts(run["idle_to"])
    drift_from, burst_from = ts(run["drift_from"]), ts(run["burst_from"])
    onboard_from = ts(run["onboard_from"])
    own = sorted((e for e in events if e["own"] and e["r"] >= started), key=lambda e: e["t"])
    admin = [e for e in events if not e["own"]]

    def rb_write(e):
        return e["resource"] == "rolebindings" and e["verb"] in ("create", "patch", "update") \
            and e["code"] in OK and not e["subresource"]

    # convergence: first request to the write that completes the expected set
    first = min((e["r"] for e in own), default=None)
    seen, done = set(), None
    for e in own:
        if e["t"] >= drift_from:
            break
        if rb_write(e):
            seen.add((e["namespace"], e["name"]))
            if len(seen) >= run["expected_bindings"]:
                done = e["t"]
                break
    conv = [e for e in own if done is not None and first <= e["r"] <= done]
    written = {(e["resource"], e["namespace"], e["name"]) for e in conv
               if e["verb"] in ("create", "patch", "update") and e["code"] in OK
               and e["resource"] in ("roles", "rolebindings") and not e["subresource"]}
    idle = [e for e in own if idle_from <= e["r"] <= idle_to]

    key = lambda e: (e["namespace"], e["name"])  # noqa: E731
    rb_writes = [e for e in own if rb_write(e) and e["verb"] == "create"]
    deletes = [e for e in admin if e["verb"] == "delete" and e["resource"] == "rolebindings" and e["code"] in OK]
    drift, drift_missing = latencies([e for e in deletes if drift_from <= e["t"] < burst_from], rb_writes, key)
    burst, burst_missing = latencies([e for e in deletes if burst_from <= e["t"] < onboard_from], rb_writes, key)
    creates = [e for e in admin if e["verb"] == "create" and e["resource"] == "namespaces"
               and e["code"] in OK and e["t"] >= onboard_from]
    # the namespace create's objectRef has no name when the name is in the body
    # only; the RoleBinding's namespace is what ties them, so key on it
    for e in creates:
        e["namespace"] = e["name"]
    onboard, onboard_missing = latencies(creates, rb_writes, lambda e: e["namespace"])

    writes_idle = [e for e in idle if e["verb"] in WRITES and e["resource"] != "leases"]
    return {
        "run": run,
        "convergence_s": None if done is None else round(done - first, 3),
        "convergence_requests": len(conv),
        "convergence_requests_by_verb": by_verb(conv),
        "objects_written": len(written),
        "requests_per_written_object": round(len(conv) / len(written), 2) if written else None,
        "steady_requests": len(idle),
        "steady_requests_by_verb": by_verb(idle),
        "steady_writes_excluding_leases": len(writes_idle),
        "drift_p50_ms": percentile(drift, 50), "drift_p99_ms": percentile(drift, 99),
        "drift_max_ms": max(drift, default=None), "drift_n": len(drift), "drift_not_repaired": drift_missing,
        "burst_p50_ms": percentile(burst, 50), "burst_p99_ms": percentile(burst, 99),
        "burst_max_ms": max(burst, default=None), "burst_n": len(burst), "burst_not_repaired": burst_missing,
        "onboard_p50_ms": percentile(onboard, 50), "onboard_p99_ms": percentile(onboard, 99),
        "onboard_max_ms": max(onboard, default=None), "onboard_n": len(onboard),
        "onboard_not_applied": onboard_missing,
        "peak_rss_mib": run["peak_rss_mib"], "rss_idle_mib": run["rss_idle_mib"],
        "cpu_convergence_s": run["cpu_convergence_s"], "cpu_total_s": run["cpu_total_s"],
        "cpu_steady_s": run["cpu_idle_s"], "apiserver_cpu_steady_s": run["apiserver_cpu_idle_s"],
    }


FIGURES = [
    ("convergence_s", "convergence (first request -> last RoleBinding)", "s"),
    ("convergence_requests", "requests during convergence", ""),
    ("objects_written", "Roles + RoleBindings written", ""),
    ("requests_per_written_object", "requests per written object", ""),
    ("steady_requests", "requests in steady state", ""),
    ("steady_writes_excluding_leases", "writes in steady state (not leases)", ""),
    ("drift_p50_ms", "drift repair p50", "ms"),
    ("drift_p99_ms", "drift repair p99", "ms"),
    ("drift_max_ms", "drift repair max", "ms"),
    ("drift_not_repaired", "drift events not repaired", ""),
    ("burst_p50_ms", "burst of deletes: repair p50", "ms"),
    ("burst_max_ms", "burst of deletes: repair max", "ms"),
    ("onboard_p50_ms", "onboarding p50", "ms"),
    ("onboard_p99_ms", "onboarding p99", "ms"),
    ("onboard_not_applied", "onboarding events not applied", ""),
    ("peak_rss_mib", "peak RSS (VmHWM)", "MiB"),
    ("rss_idle_mib", "RSS in steady state", "MiB"),
    ("cpu_convergence_s", "operator CPU, convergence", "s"),
    ("cpu_total_s", "operator CPU, whole run", "s"),
    ("cpu_steady_s", "operator CPU, steady state", "s"),
    ("apiserver_cpu_steady_s", "API server CPU, steady state", "s"),
]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def report(runs_dir, out):
    results = {}
    for d in sorted(os.listdir(runs_dir)):
        path = os.path.join(runs_dir, d)
        if not os.path.exists(os.path.join(path, "audit.jsonl")):
            continue
        r = analyse(path)
        results.setdefault(r["run"]["scenario"], {})[r["run"]["operator"]] = r
    doc = {"date": datetime.now().astimezone().isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                       "load_average_at_report": os.getloadavg()},
           "scenarios": {}}
    for sc in sorted(results, key="SML".find):
        ops = results[sc]
        ta, rbm = ops.get("teamaccess"), ops.get("rbac-manager")
        any_run = (ta or rbm)["run"]
        print(f"\nscenario {sc}: {any_run['crs']} CRs, {any_run['namespaces']} namespaces, "
              f"{any_run['expected_bindings']} RoleBindings expected; drift {any_run['drift_events']} "
              f"deletes {any_run['gap_ms']} ms apart + burst {any_run['burst']}; onboarding "
              f"{any_run['onboard_events']} namespaces; steady state {any_run['idle_seconds']} s")
        print(f"{'figure':<50} {'teamaccess':>12} {'rbac-manager':>13} {'ratio':>7}")
        rows = {}
        for k, label, unit in FIGURES:
            a = ta.get(k) if ta else None
            b = rbm.get(k) if rbm else None
            rows[k] = {"teamaccess": a, "rbac-manager": b, "ratio": ratio(a, b)}
            print(f"{label + (' (' + unit + ')' if unit else ''):<50} {fmt(a):>12} {fmt(b):>13} {fmt(ratio(a, b)):>7}")
        for phase in ("convergence_requests_by_verb", "steady_requests_by_verb"):
            verbs = sorted(set((ta or {}).get(phase, {})) | set((rbm or {}).get(phase, {})))
            for v in verbs:
                a = (ta or {}).get(phase, {}).get(v, 0) if ta else None
                b = (rbm or {}).get(phase, {}).get(v, 0) if rbm else None
                label = f"{phase.split('_')[0]} requests: {v}"
                rows[f"{phase}.{v}"] = {"teamaccess": a, "rbac-manager": b, "ratio": ratio(a, b)}
                print(f"{label:<50} {fmt(a):>12} {fmt(b):>13} {fmt(ratio(a, b)):>7}")
        doc["scenarios"][sc] = {"figures": rows, "runs": {op: ops[op] for op in OPERATORS if op in ops}}
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "extract":
        extract(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
