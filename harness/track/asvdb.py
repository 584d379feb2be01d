"""Records → asv's results database, so ``asv publish`` graphs every metric of every cell over commits.

Why write asv's results JSON (format version 2) rather than asv benchmarks that read the store: the
records are already the measurements, made once per cell by the runner in its own processes. asv
benchmarks would re-enter them through asv's per-benchmark subprocesses and per-commit environments
(torch and CUDA builds per commit), and ``asv run`` rewrites ``benchmarks.json`` from whatever it
discovered on that run, so graphs of cells a runner skipped would vanish. Writing the database
directly keeps one source of truth (the store), keeps ``benchmarks.json`` the union of everything
ever ingested, and needs no asv at all until ``asv publish``. asv is pinned (``track`` extra) because
this module writes its format.

Layout (stable, so graphs keep their history):

- one asv benchmark per (suite, cell, metric), named ``<suite>.<cell>.<metric>`` (dots and other
  characters outside ``[A-Za-z0-9_-]`` in ids become ``_``), of type ``track`` with the metric's unit;
- result-file parameters are only ``machine`` (a logical runner name, never a hostname) and ``device``
  (``cpu`` or the GPU's name), the graph axes of the site; package versions go to ``requirements``,
  which asv shows but does not split graphs by;
- one result file per (machine, commit, device); ingesting again merges, the latest record wins.

Direction: asv treats every increase as worse. A series on which asv's regression detection runs is
lower-is-better: latencies, bytes, perplexity, and a *companion* of each higher-is-better metric the
gate judges (:func:`harness.track.compare.rule_for`): seconds per million tokens for ``tok/s``, seconds per
thousand requests for ``req/s``, ``error = 1 - x`` for accuracy ratios, ``1 / x`` for speed ratios.
The raw higher-is-better series, and the metrics the gate does not judge (predictions, counts, host
facts), are still graphed but live under ``<suite>.<cell>.graph_only.<metric>``, which the
configuration's ``regressions_first_commits`` turns off. :func:`check_config` proves the configuration
does exactly that for every series written, and refuses unknown (misspelled) configuration keys,
which asv itself silently ignores.

Record text is untrusted here: asv's pages show a benchmark's ``code`` as HTML (a tooltip with
``html: true``), so the reproduce command and description written there are HTML-escaped; a record's
``git_sha`` becomes a git argument and part of a file name, so only a hex commit (7 to 64 digits) is
used, and a metric name becomes a series name (an asv file name, shown as HTML), so only letters,
digits and ``_`` joined by ``.`` or ``-``; a record with anything else is reported as a problem, not
written.

asv's other pitfalls, handled here: a result whose benchmark ``version`` differs from
``benchmarks.json`` is ignored by asv, so versions are a hash of (name, unit, layout, record schema)
and never change for a series; asv drops commits it cannot find on its configured branches, so each
commit is checked against the repository and every such commit is reported.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from harness.base.errors import HarnessError
from harness.metrics import spec_for
from harness.results.records import SCHEMA_VERSION, Record, device_of
from harness.track.asvconf import AsvConfig, detection_on
from harness.track.compare import rule_for

LAYOUT_VERSION = 1  # bump when a series' name or meaning changes (with SCHEMA_VERSION, it feeds every version hash)
GRAPH_ONLY = "graph_only"
ENV_NAME = "harness"
RESULT_COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
                  "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples"]
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_HEX_SHA = re.compile(r"[0-9a-fA-F]{7,64}")
_METRIC_NAME = re.compile(r"[A-Za-z0-9_]+(?:[.-][A-Za-z0-9_]+)*")  # part of a series name, an asv file name and HTML


class Series(BaseModel):
    """One asv benchmark's point from one record."""

    name: str
    unit: str
    value: float | None = Field(description="None: the cell failed (asv shows a failed point)")
    samples: list[float] = Field(default_factory=list)
    tracked: bool = Field(description="regression detection runs on it (lower is better)")
    description: str = ""


def slug(text: str) -> str:
    return _UNSAFE.sub("_", text)


def _companion(name: str, unit: str, value: float, samples: list[float], kind: str) -> tuple[str, str, float, list[float]] | None:
    """The lower-is-better companion of a higher-is-better metric, or None where undefined (a zero rate)."""
    if unit == "tok/s" and "_tok_s" in name:
        new, scale, cunit = name.replace("_tok_s", "_s_per_Mtok", 1), 1e6, "s/Mtok"
    elif unit == "req/s" and "_req_s" in name:
        new, scale, cunit = name.replace("_req_s", "_s_per_kreq", 1), 1e3, "s/kreq"
    elif kind == "accuracy" and name.endswith("_ratio"):
        return name[: -len("_ratio")] + "_error_ratio", "ratio", 1.0 - value, [1.0 - s for s in samples]
    elif name.endswith("_ratio"):
        new, scale, cunit = name[: -len("_ratio")] + "_inverse_ratio", 1.0, "1/ratio"
    else:
        new, scale, cunit = f"{name}_inverse", 1.0, f"1/({unit})"
    if value <= 0:
        return None
    return new, cunit, scale / value, [scale / s for s in samples if s > 0]


def series_of(record: Record) -> list[Series]:
    """Every asv series of one record: its metrics (tracked or graph-only) and their companions."""
    prefix = f"{slug(record.suite)}.{slug(record.cell_id)}"
    out: list[Series] = []
    for name, m in sorted(record.metrics.items()):
        rule = rule_for(name, m)
        spec = spec_for(name)
        unit = spec.unit if spec is not None else m.unit  # the declared unit (older records: as recorded)
        failed = record.status != "ok"
        value = None if failed else m.value
        tracked = rule is not None and rule.direction == "lower"
        out.append(Series(name=f"{prefix}.{name}" if tracked else f"{prefix}.{GRAPH_ONLY}.{name}", unit=unit,
                          value=value, samples=[] if failed else m.samples, tracked=tracked, description=m.description))
        if rule is not None and rule.direction == "higher" and not failed:
            comp = _companion(name, unit, m.value, m.samples, rule.kind)
            if comp is not None:
                cname, cunit, cvalue, csamples = comp
                out.append(Series(name=f"{prefix}.{cname}", unit=cunit, value=cvalue, samples=csamples, tracked=True,
                                  description=f"lower-is-better companion of {name} ({m.unit}), for asv's regression detection"))
    return out


def check_config(config: AsvConfig, series: list[Series]) -> None:
    """Refuse a configuration under which asv would judge a graph-only series or skip a tracked one."""
    wrong = [s.name for s in series if detection_on(config, s.name) != s.tracked]
    if wrong:
        raise HarnessError(f"{config.path}: regressions_first_commits does not match the series layout for "
                           f"{len(wrong)} series, e.g. {wrong[0]!r} (graph-only series live under "
                           f"'<suite>.<cell>.{GRAPH_ONLY}.'; see harness/track/asvdb.py)")


def code_html(description: str, command: str) -> str:
    """A benchmark's ``code`` field: the series' description and the record's reproduce command, as text
    HTML-escaped for asv's pages (which insert it as HTML): no record can inject markup or script."""
    text = (f"# {description}\n" if description else "") + f"# reproduce the cell:\n{command}"
    return html.escape(text, quote=True)


def _version(name: str, unit: str) -> str:
    return hashlib.sha256(f"{name}|{unit}|{LAYOUT_VERSION}|{SCHEMA_VERSION}".encode()).hexdigest()


def _git(repo: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


class Ingest(BaseModel):
    """What :func:`ingest` wrote and what it could not place."""

    files: list[Path] = Field(default_factory=list)
    series: int = 0
    records: int = 0
    problems: list[str] = Field(default_factory=list, description="records not written, and why")
    invalid: list[str] = Field(default_factory=list, description="records not written because they are not valid")
    warnings: list[str] = Field(default_factory=list, description="written, but asv may not show them")


def _stats(samples: list[float]) -> dict[str, list[float]]:
    """asv's per-parameter stats columns (one entry each: these benchmarks have no parameters)."""
    if len(samples) < 2:
        return {}
    q25, q75 = (float(x) for x in np.percentile(samples, [25, 75]))
    return {"q_25": [q25], "q_75": [q75], "number": [1], "repeat": [len(samples)]}


def ingest(records: list[Record], config: AsvConfig, machine: str) -> Ingest:
    """Write ``records`` into the configuration's results directory for ``machine``; see the module docstring."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", machine):
        raise HarnessError(f"--machine {machine!r}: use letters, digits, '.', '_' and '-' (it names a folder and a graph axis)")
    report = Ingest()
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r.status == "skipped":
            continue
        if r.status == "invalid" or (r.validity is not None and not r.validity.valid):
            why = "; ".join(r.validity.reasons) if r.validity else r.reason
            report.invalid.append(f"{r.suite}/{r.cell_id} ({r.record_id}): {why}")
            continue
        if not r.environment.git_sha:
            report.problems.append(f"{r.suite}/{r.cell_id} ({r.record_id}): no git commit in its environment "
                                   "(run outside a git checkout), so it has no place on asv's commit axis")
            continue
        if not _HEX_SHA.fullmatch(r.environment.git_sha):  # a git argument and a file name below
            report.problems.append(f"{r.suite}/{r.cell_id} ({r.record_id}): git_sha {r.environment.git_sha[:80]!r} "
                                   "is not a commit (7 to 64 hex digits)")
            continue
        bad = sorted(n for n in r.metrics if not _METRIC_NAME.fullmatch(n))
        if bad:
            report.problems.append(f"{r.suite}/{r.cell_id} ({r.record_id}): metric names {[b[:80] for b in bad[:3]]} "
                                   "are not letters, digits and '_' (joined by '.' or '-'); asv would take them as "
                                   "paths and markup")
            continue
        groups[(r.environment.git_sha, device_of(r))].append(r)
    if not groups:
        return report
    all_series = [s for rs in groups.values() for r in rs for s in series_of(r)]
    check_config(config, all_series)

    results_dir = config.results_dir
    (results_dir / machine).mkdir(parents=True, exist_ok=True)
    bench_path = results_dir / "benchmarks.json"
    benchmarks = json.loads(bench_path.read_text()) if bench_path.is_file() else {}
    benchmarks["version"] = 2
    branch_commits = {b: _git(config.repo, "rev-parse", "--verify", "--quiet", f"{b}^{{commit}}") for b in config.branches}
    for (sha, device), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r.started_at)
        report.warnings += _commit_warnings(config, sha, rs, branch_commits)
        report.files.append(_write_commit(config, machine, sha, device, rs, benchmarks, report))
    machine_json = results_dir / machine / "machine.json"
    if not machine_json.is_file():
        host = groups[next(iter(sorted(groups)))][0].environment
        machine_json.write_text(json.dumps({"machine": machine, "os": host.platform, "cpu": host.cpu_model,
                                            "num_cpu": str(host.cpu_count), "ram": str(host.memory_bytes),
                                            "arch": "", "version": 1}, indent=1) + "\n")
    bench_path.write_text(json.dumps(benchmarks, indent=1, sort_keys=True) + "\n")
    return report


def _commit_warnings(config: AsvConfig, sha: str, rs: list[Record], branch_commits: dict[str, str | None]) -> list[str]:
    """Why asv may not show ``rs`` at commit ``sha``: missing from the repository, on no configured
    branch, or measured on a checkout with uncommitted changes."""
    out = []
    if _git(config.repo, "cat-file", "-e", f"{sha}^{{commit}}") is None:
        out.append(f"commit {sha[:12]} ({len(rs)} records) is not in the repository {config.repo}: "
                   "asv publish will drop it; publish from a full clone that has it")
    elif not any(tip and _git(config.repo, "merge-base", "--is-ancestor", sha, tip) is not None for tip in branch_commits.values()):
        out.append(f"commit {sha[:12]} ({len(rs)} records) is on none of the configured branches "
                   f"{config.branches}: asv publish will leave it out of the graphs")
    if any(r.environment.git_dirty for r in rs):
        out.append(f"commit {sha[:12]}: some records came from a checkout with uncommitted changes")
    return out


def _write_commit(config: AsvConfig, machine: str, sha: str, device: str, rs: list[Record], benchmarks: dict,
                  report: Ingest) -> Path:
    """Merge ``rs`` (oldest first: the latest record of a cell wins) into the result file of (machine,
    commit, device) and ``benchmarks``; returns the file written."""
    results_dir = config.results_dir
    date_s = _git(config.repo, "show", "-s", "--format=%ct", sha)
    date_ms = int(date_s) * 1000 if date_s else int(rs[0].started_at.timestamp() * 1000)
    path = results_dir / machine / f"{sha[:8]}-{ENV_NAME}-{slug(device)}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"results": {}}
    packages = {k: v for k, v in rs[-1].environment.packages.items() if v}
    data.update({"commit_hash": sha, "env_name": f"{ENV_NAME}-{slug(device)}", "date": date_ms,
                 "python": rs[-1].environment.python.rsplit(".", 1)[0], "params": {"machine": machine, "device": device},
                 "requirements": packages, "env_vars": {}, "result_columns": RESULT_COLUMNS, "durations": {},
                 "version": 2})
    for r in rs:
        for s in series_of(r):
            version = _version(s.name, s.unit)
            st = _stats(s.samples)
            row = [[s.value], [], version, int(r.started_at.timestamp() * 1000), r.duration_s, None, None,
                   st.get("q_25"), st.get("q_75"), st.get("number"), st.get("repeat"), [s.samples] if s.samples else None]
            while row[-1] is None:  # asv drops trailing null columns
                row.pop()
            data["results"][s.name] = row
            benchmarks[s.name] = {"name": s.name, "type": "track", "unit": s.unit, "param_names": [], "params": [],
                                  "version": version, "pretty_name": s.name, "code": code_html(s.description, r.command)}
            report.series += 1
        report.records += 1
    path.write_text(json.dumps(data, allow_nan=True, sort_keys=True) + "\n")
    return path


def regressions(html_dir: str | Path) -> list[dict]:
    """The regressions page of an ``asv publish`` (``regressions.json``), one dict per regressed series:
    ``benchmark``, ``params`` (machine, device, branch where several), ``last`` and ``best`` values, and
    the ``jumps`` (commit range, before, after). asv has no command that lists them."""
    path = Path(html_dir) / "regressions.json"
    if not path.is_file():
        raise HarnessError(f"{path}: not found; run `asv --config benchmarks/asv.conf.json publish` first")
    out = []
    for name, graph_path, params, _idx, last, best, jumps in json.loads(path.read_text())["regressions"]:
        out.append({"benchmark": name, "graph": graph_path, "params": params, "last": last, "best": best,
                    "jumps": [{"from": a, "to": b, "before": x, "after": y} for a, b, x, y in jumps]})
    return out

