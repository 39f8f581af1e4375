"""What learned routing buys on real traffic: the gate on MovieLens-100k request logs, and on the demo.

1. Builds the MovieLens-100k request logs (``toolkit data movielens``: the ratings RecBole's wheel
   ships, sessions of a user's ratings as requests, a split in time), trains and exports the tiers of
   ``examples/movielens/spec.yaml`` where their outputs are missing.
2. For each gate configuration (``--variants``; default: the summary MLP over request features, the
   request gate fitted on cross-fitted training scores, the request gate cheapest tier first, and the
   default, the request gate on the calibration log): ``toolkit calibrate`` then ``toolkit evaluate``
   with ``routing.policy: learned``. Reports, between lite and xl, the gate's APGR, CPT(50%) and
   CPT(80%) with 95% bootstrap intervals over the held-out requests, CPT(80%) with its own cost
   counted (FLOPs and ms), the targets' validation APGR, the ceilings (the oracle, a gate that knew
   xl's predictions) and random; the learned policy's NE, tier mix and NDCG@5; and the gate's speed
   (ONNX Runtime, 1 thread) and memory (file size, parameters, resident memory of its session).
3. With ``--demo`` (the default), the same for the demo data (``ensembles/ads_ranking.yaml`` with
   ``routing.policy: learned``), its training and export run where missing.

Targets (the routing issue): on MovieLens APGR >= 0.65 and CPT(80%) <= 60% of requests on xl, its
own cost included; on the demo APGR >= 0.80 and CPT(80%) <= 30%.

Writes ``benchmarks/results/realdata.md``, ``realdata.json`` and ``realdata.png`` (the default
gate's evaluation plot on MovieLens); scratch specs go to ``benchmarks/scratch/realdata``.

Usage: ``python benchmarks/realdata.py [--variants summary,cross_fit,cheapest_first,request] [--no-demo]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from common import RESULTS, ROOT, prepare, toolkit, write_report

from toolkit.machine import machine_facts
from toolkit.spec import load_spec

MOVIELENS_SPEC = Path("examples/movielens/spec.yaml")
DEMO_SPEC = Path("ensembles/ads_ranking.yaml")
SCRATCH = ROOT / "benchmarks" / "scratch" / "realdata"
VARIANTS = {
    "summary": {"gate": "summary"},
    "cross_fit": {"gate": "request", "fit_on": "cross_fit"},
    "cheapest_first": {"gate": "request", "cheapest_first": True},
    "request": {"gate": "request"},
}
"""Gate configurations (``routing.learned`` keys); ``request`` is the default of ``policy: learned``."""


def _variant_spec(base: Path, name: str, learned: dict[str, Any]) -> Path:
    data = yaml.safe_load((ROOT / base).read_text(encoding="utf-8"))
    routing = data.setdefault("routing", {})
    routing["policy"] = "learned"
    routing["learned"] = {**routing.get("learned", {}), **learned}
    path = SCRATCH / f"{base.stem}-{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


_MEMORY_PROBE = """
import sys, numpy as np
from pathlib import Path
def resident():
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e6
from toolkit.export.parity import cpu_session
feed = dict(np.load(sys.argv[2]))
before = resident()
session = cpu_session(sys.argv[1])
for _ in range(100):
    session.run(None, feed)
print(resident() - before)
"""


def _gate_memory(path: Path, feed: dict[str, np.ndarray]) -> float:
    """Resident memory (MB) an ONNX Runtime session of the gate adds in a fresh process, after 100 calls."""
    inputs = SCRATCH / "gate-feed.npz"
    np.savez(inputs, **feed)
    probe = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(path), str(inputs)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return float(probe.stdout.strip().splitlines()[-1])


def _one(base: Path, name: str, learned: dict[str, Any]) -> dict[str, Any]:
    spec_path = _variant_spec(base, name, learned)
    spec = load_spec(spec_path)
    out = SCRATCH / f"{base.stem}-{name}-evaluation"
    started = time.perf_counter()
    toolkit("calibrate", "--spec", str(spec_path))
    calibrate_s = time.perf_counter() - started
    toolkit("evaluate", "--spec", str(spec_path), "--out", str(out))
    evaluation = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    artifacts = ROOT / spec.paths.artifacts
    calibration = json.loads((artifacts / spec.gate_model / "calibration.json").read_text(encoding="utf-8"))
    from toolkit.data.demo import demo_holdout_set
    from toolkit.evaluate.offline import OfflineEnsemble, deployed_variants

    offline = OfflineEnsemble(spec, artifacts, deployed_variants(spec, artifacts, None))
    raw = demo_holdout_set(spec, 1).request(0)
    feed = offline.preprocessed(raw)
    if spec.routing.learned.cheapest_first:
        feed["cheapest_score"] = offline.score(feed, spec.tier_names[0])
    memory = _gate_memory(artifacts / spec.gate_model / "onnx-fp32" / "model.onnx", feed)
    points = {p["policy"]: p for p in evaluation["points"]}
    return {
        "variant": name,
        "learned": learned,
        "calibrate_s": calibrate_s,
        "calibration": calibration,
        "summary": evaluation["summary"],
        "policy": points["learned policy"],
        "tiers": {t: points[f"{t} alone"] for t in spec.tier_names},
        "gate_session_mb": memory,
        "evaluation": str(out.relative_to(ROOT)),
        "warnings": evaluation["warnings"],
        "requests": evaluation["requests"],
    }


def run(base: Path, variants: list[str]) -> dict[str, Any]:
    """Prepare ``base`` and evaluate each gate variant on it (the default, ``request``, last)."""
    spec = load_spec(ROOT / base)
    prepare(base, spec)
    ordered = [v for v in variants if v != "request"] + (["request"] if "request" in variants else [])
    return {"spec": str(base), "variants": [_one(base, v, VARIANTS[v]) for v in ordered]}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def _ci(s: dict[str, Any], key: str, spec: str) -> str:
    low, _, high = s["interval"][key]
    return f"{_fmt(s[key], spec)} [{_fmt(low, spec)}, {_fmt(high, spec)}]"


def _section(title: str, part: dict[str, Any]) -> list[str]:
    default = part["variants"][-1]
    summary = default["summary"]
    strong = summary["strong"]
    lines = [
        f"## {title}",
        "",
        f"`{part['spec']}`, {default['requests']} held-out requests; routing between {summary['weak']} and "
        f"{strong}, request by request. APGR and CPT with 95% bootstrap intervals over requests; cost "
        "CPT(80%): the cost, as a share of "
        f"{strong}'s extra cost over {summary['weak']}, at which the gate priced as the learned policy "
        "prices it recovers 80% of the gap, its own cost (and the cheapest tier's, cheapest first) counted.",
        "",
        "| gate | fitted on | target (validation APGR) | APGR | CPT(50%) | CPT(80%) "
        "| cost CPT(80%) FLOPs / ms | gate MFLOP at N=16 / 64 | gate ms at N=16 / 64 "
        "| params, MB, session MB | calibrate s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in part["variants"]:
        s, c = v["summary"]["learned gate"], v["calibration"]
        design = c["gate"] + (", cheapest first" if c["cheapest_first"] else "")
        validation = ", ".join(f"{t} {x:.3f}" for t, x in c["validation_apgr"].items())
        a, b = c["gate_cost_mflop"]
        ms = c["gate_ms"]
        lines.append(
            f"| {design} | {c['fit_on']} ({c['calibration_requests']} requests) "
            f"| {c['target']} ({validation}) "
            f"| {_ci(s, 'apgr', '.3f')} | {_ci(s, 'cpt50', '.1%')} | {_ci(s, 'cpt80', '.1%')} "
            f"| {_fmt(s['cost_cpt80_flops_per_request'], '.1%')} "
            f"/ {_fmt(s['cost_cpt80_ms_per_request'], '.1%')} "
            f"| {a + 16 * b:.3f} / {a + 64 * b:.3f} "
            f"| {_fmt(ms.get('16'), '.3f')} / {_fmt(ms.get('64'), '.3f')} "
            f"| {c['gate_parameters']:,}, {c['gate_bytes'] / 1e6:.2f}, {v['gate_session_mb']:.1f} "
            f"| {v['calibrate_s']:.0f} |"
        )
    lines += ["", "Ceilings and the random line:", ""]
    for name in ("oracle", f"gate that knew {strong}", "random"):
        s = summary[name]
        lines.append(
            f"- {name}: APGR {s['apgr']:.3f}, CPT(50%) {_fmt(s['cpt50'], '.1%')}, "
            f"CPT(80%) {_fmt(s['cpt80'], '.1%')}"
        )
    policy, tiers = default["policy"], default["tiers"]
    lines += [
        "",
        f"The learned policy with the default gate (target {default['calibration']['target_share']:.0%} "
        f"of requests on {strong}, priced on the calibration requests): on the held-out requests",
        "",
        "| policy | "
        + " | ".join(f"{t} share" for t in tiers)
        + " | NE | PGR | NDCG@5 | MFLOP/request | ms/request |",
        "|---|" + "---|" * (len(tiers) + 5),
    ]
    for name, p in [*((f"{t} alone", p) for t, p in tiers.items()), ("learned policy", policy)]:
        lines.append(
            f"| {name} | "
            + " | ".join(f"{p['shares'][t]:.0%}" for t in tiers)
            + f" | {p['ne']:.4f} | {_fmt(p.get('pgr'), '.3f')} | {_fmt(p.get('ndcg'), '.4f')} "
            f"| {p['flops_per_request'] / 1e6:.2f} | {_fmt(p['ms_per_request'], '.3f')} |"
        )
    for v in part["variants"]:
        for warning in v["warnings"]:
            lines.append(f"\n- WARNING ({v['variant']}): {warning}")
    return lines


def render(result: dict[str, Any]) -> str:
    """The report as markdown."""
    machine = result["machine"]
    lines = [
        "# Learned routing on real traffic",
        "",
        f"Run {result['created']} on {machine.get('cpu', 'this machine')} "
        f"({machine.get('cores', '?')} cores), "
        "command `make bench-realdata`. MovieLens-100k: GroupLens Research (research use only); read from "
        "RecBole's wheel; the requests are built as `toolkit data movielens` documents.",
        "",
    ]
    lines += _section("MovieLens-100k", result["movielens"])
    if "demo" in result:
        lines += ["", *_section("The demo data", result["demo"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benchmark and write its report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="gate variants, comma-separated")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        sys.exit(f"--variants: unknown {', '.join(unknown)}; expected some of {', '.join(VARIANTS)}")
    logs = load_spec(ROOT / MOVIELENS_SPEC).data.files
    if not (ROOT / logs.train).is_file():
        toolkit("data", "movielens", "--out", str(Path(logs.train).parent))
    result: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "movielens": run(MOVIELENS_SPEC, variants),
    }
    if not args.no_demo:
        result["demo"] = run(DEMO_SPEC, ["request"])
    write_report(args.out, "realdata", result, render(result))
    default = result["movielens"]["variants"][-1]
    shutil.copy2(ROOT / default["evaluation"] / "evaluation.png", args.out / "realdata.png")
    print(render(result))


if __name__ == "__main__":
    main()
