"""`harness asv` and `asv publish`: records become asv series with stable names and versions, every
higher-is-better metric gets a lower-is-better companion, and asv's regressions page (the real asv,
publishing from a real git repository) lists a throughput drop and an accuracy drop but no improvement.
Records are built in code; the numbers are the test's inputs, not benchmark results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness.base.errors import HarnessError
from harness.results.records import Metric, Record
from harness.results.store import Store
from harness.track.asvconf import ASV_CONFIG_KEYS, load_config
from harness.track.asvdb import GRAPH_ONLY, regressions, series_of

REPO = Path(__file__).resolve().parents[1]
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=GIT_ENV).stdout.strip()


@pytest.fixture(scope="module")
def env():
    from harness.results.environment import capture

    return capture()


def make_repo(root: Path, commits: int) -> list[str]:
    """A git repository on branch main with ``commits`` commits, a day apart; their hashes, oldest first."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    shas = []
    for i in range(commits):
        (root / "f.txt").write_text(str(i))
        git(root, "add", "f.txt")
        day = f"2026-11-{10 + i:02d}T03:00:00+00:00"
        subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", f"c{i}"], check=True,
                       env={**GIT_ENV, "GIT_AUTHOR_DATE": day, "GIT_COMMITTER_DATE": day})
        shas.append(git(root, "rev-parse", "HEAD"))
    return shas


def make_config(tmp_path: Path, repo: Path, **changes) -> Path:
    """The project's asv configuration, pointed at ``repo`` and at folders under tmp_path."""
    conf = json.loads((REPO / "benchmarks" / "asv.conf.json").read_text())
    conf.update(repo=str(repo), results_dir=str(tmp_path / "asv" / "results"), html_dir=str(tmp_path / "asv" / "html"),
                env_dir=str(tmp_path / "asv" / "env"), **changes)
    path = tmp_path / "asv.conf.json"
    path.write_text(json.dumps(conf))
    return path


def record(env, sha: str | None, cell: str, metrics: dict[str, Metric], day: int, status: str = "ok") -> Record:
    e = env.model_copy(update={"git_sha": sha, "git_dirty": False})
    return Record(record_id=f"{cell.replace('/', '_')}-{day}-{status}", suite="nightly", cell_id=cell, cell_key="k", code_key="c",
                  cell={"device": "cpu"}, status=status, metrics=metrics, environment=e, seed=0,
                  started_at=datetime(2026, 11, 10, tzinfo=timezone.utc) + timedelta(days=day), duration_s=3.0,
                  command=f"harness run suites/nightly.yaml --only {cell}")


def metrics(tok_s: float, ex: float, ttft: float) -> dict[str, Metric]:
    return {"output_tok_s": Metric(value=tok_s, unit="tok/s", samples=[tok_s * 0.99, tok_s, tok_s * 1.01]),
            "text2sql_ex_ratio": Metric(value=ex, unit="ratio"),
            "ttft_ms": Metric(value=ttft, unit="ms"),
            "peak_rss_bytes": Metric(value=2e9, unit="bytes"),
            "weight_bytes_analytic": Metric(value=1e9, unit="bytes", source="analytic")}


def ingest_cli(config: Path, *stores: Path, machine: str = "cpu-ci") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "asv", *map(str, stores), "--machine", machine,
                           "--config", str(config)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "250"})


def publish(config: Path) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "asv", "--config", str(config), "publish"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_series_layout_names_units_and_companions(env):
    r = record(env, "a" * 40, "serve.vllm/bf16", metrics(200.0, 0.80, 100.0)
               | {"request_throughput_req_s": Metric(value=4.0, unit="req/s"),
                  "decode_efficiency_ratio": Metric(value=0.25, unit="ratio")}, 0)
    s = {x.name: x for x in series_of(r)}
    p = "nightly.serve_vllm_bf16"
    # raw higher-is-better and unjudged metrics: graphed only
    assert not s[f"{p}.{GRAPH_ONLY}.output_tok_s"].tracked and s[f"{p}.{GRAPH_ONLY}.output_tok_s"].value == 200.0
    assert not s[f"{p}.{GRAPH_ONLY}.weight_bytes_analytic"].tracked
    # lower-is-better metrics and the companions: tracked, with their units
    assert s[f"{p}.ttft_ms"].tracked and s[f"{p}.ttft_ms"].unit == "ms"
    assert s[f"{p}.peak_rss_bytes"].unit == "bytes"
    comp = s[f"{p}.output_s_per_Mtok"]
    assert comp.tracked and comp.unit == "s/Mtok" and comp.value == pytest.approx(5000.0)
    assert comp.samples == pytest.approx([1e6 / (200 * 0.99), 5000.0, 1e6 / (200 * 1.01)])
    assert s[f"{p}.text2sql_ex_error_ratio"].value == pytest.approx(0.20)
    assert s[f"{p}.request_throughput_s_per_kreq"].value == pytest.approx(250.0)
    assert s[f"{p}.decode_efficiency_inverse_ratio"].value == pytest.approx(4.0)
    # a failed cell: failed points (None) and no companions
    failed = {x.name: x for x in series_of(record(env, "a" * 40, "c", metrics(1, 1, 1), 0, status="error"))}
    assert failed["nightly.c.ttft_ms"].value is None and not any("s_per_Mtok" in n for n in failed)


def test_the_project_config_turns_detection_off_exactly_on_graph_only_series(tmp_path, env):
    conf = load_config(REPO / "benchmarks" / "asv.conf.json")
    from harness.track.asvconf import detection_on

    for x in series_of(record(env, "a" * 40, "cell-1", metrics(100, 0.5, 10), 0)):
        assert detection_on(conf, x.name) == x.tracked, x.name
    # thresholds (asv matches `name@branch`): perplexity-like and accuracy errors are stricter than the 5 % default
    from harness.track.asvconf import threshold_of

    assert threshold_of(conf, "nightly.cell-1.text2sql_ex_error_ratio", "main") == 0.02
    assert threshold_of(conf, "nightly.cell-1.perplexity", "main") == 0.02
    assert threshold_of(conf, "nightly.cell-1.output_s_per_Mtok", "main") == 0.05
    assert threshold_of(conf, "nightly.cell-1.graph_only.perplexity_analytic", "main") == 0.05


def test_known_config_keys_match_the_installed_asv():
    from asv.config import Config

    assert ASV_CONFIG_KEYS == set(vars(Config())) | {"version", "build_cache_size"}


def test_a_misspelled_config_key_is_refused(tmp_path):
    path = tmp_path / "asv.conf.json"
    conf = json.loads((REPO / "benchmarks" / "asv.conf.json").read_text())
    conf["regression_thresholds"] = conf.pop("regressions_thresholds")  # pandas' historical misspelling
    path.write_text(json.dumps(conf))
    with pytest.raises(HarnessError, match="unknown asv configuration key 'regression_thresholds'.*did you mean 'regressions_thresholds'"):
        load_config(path)
    conf = json.loads((REPO / "benchmarks" / "asv.conf.json").read_text())
    conf["regressions_first_commits"] = {}  # detection left on for raw throughput: refused before writing
    path.write_text(json.dumps(conf))
    shas = make_repo(tmp_path / "repo", 1)
    store = Store(tmp_path / "s")
    store.append(record(_env(), shas[0], "c", metrics(100, 0.5, 10), 0))
    res = ingest_cli(make_config(tmp_path, tmp_path / "repo", regressions_first_commits={}), tmp_path / "s")
    assert res.returncode == 2 and "regressions_first_commits does not match" in res.stderr, res.stderr
    assert not (tmp_path / "asv" / "results" / "benchmarks.json").exists()


def _env():
    from harness.results.environment import capture

    return capture()


def test_results_load_in_asv_with_matching_versions_and_merge(tmp_path, env):
    from asv.results import Results

    shas = make_repo(tmp_path / "repo", 1)
    config = make_config(tmp_path, tmp_path / "repo")
    store = Store(tmp_path / "s")
    store.append(record(env, shas[0], "c", metrics(100.0, 0.5, 10.0), 0))
    assert ingest_cli(config, tmp_path / "s").returncode == 0
    # the same cell again on the same commit (a re-run): merged, the latest record wins, versions unchanged
    store.append(record(env, shas[0], "c", metrics(120.0, 0.5, 10.0), 1))
    res = ingest_cli(config, tmp_path / "s")
    assert res.returncode == 0, res.stderr
    bench = json.loads((tmp_path / "asv" / "results" / "benchmarks.json").read_text())
    [path] = (tmp_path / "asv" / "results" / "cpu-ci").glob(f"{shas[0][:8]}-*.json")
    loaded = Results.load(str(path))
    names = [n for n in bench if n != "version"]
    assert sorted(loaded.get_result_keys(bench)) == sorted(names)  # asv ignores a result whose version differs
    assert loaded.get_result_value("nightly.c.graph_only.output_tok_s", []) == [120.0]
    assert loaded.params == {"machine": "cpu-ci", "device": "cpu"}
    assert loaded.date == int(datetime(2026, 11, 10, 3, tzinfo=timezone.utc).timestamp()) * 1000  # the commit's date
    assert bench["nightly.c.output_s_per_Mtok"]["unit"] == "s/Mtok"
    assert "harness run suites/nightly.yaml --only c" in bench["nightly.c.output_s_per_Mtok"]["code"]


def test_records_asv_cannot_place_are_reported_and_the_rest_written(tmp_path, env):
    shas = make_repo(tmp_path / "repo", 2)
    git(tmp_path / "repo", "checkout", "-q", "-b", "side")
    (tmp_path / "repo" / "g.txt").write_text("x")
    git(tmp_path / "repo", "add", "g.txt")
    git(tmp_path / "repo", "commit", "-q", "-m", "side")
    side = git(tmp_path / "repo", "rev-parse", "HEAD")
    store = Store(tmp_path / "s")
    store.append(record(env, shas[1], "ok-cell", metrics(100, 0.5, 10), 0))
    store.append(record(env, None, "no-commit", metrics(100, 0.5, 10), 0))
    store.append(record(env, side, "side-cell", metrics(100, 0.5, 10), 0))
    store.append(record(env, "f" * 40, "unknown-commit", metrics(100, 0.5, 10), 0))
    res = ingest_cli(make_config(tmp_path, tmp_path / "repo"), tmp_path / "s")
    assert res.returncode == 2
    assert "nightly/no-commit" in res.stderr and "no git commit" in res.stderr
    assert f"commit {side[:12]}" in res.stderr and "none of the configured branches ['main']" in res.stderr
    assert "commit ffffffffffff" in res.stderr and "not in the repository" in res.stderr
    bench = json.loads((tmp_path / "asv" / "results" / "benchmarks.json").read_text())
    assert "nightly.ok-cell.ttft_ms" in bench and "nightly.no-commit.ttft_ms" not in bench


def test_invalid_records_stay_out_of_asv_with_a_count(tmp_path, env):
    from harness.results.records import Validity

    shas = make_repo(tmp_path / "repo", 1)
    store = Store(tmp_path / "s")
    store.append(record(env, shas[0], "quiet", metrics(100, 0.5, 10), 0))
    contended = record(env, shas[0], "contended", metrics(7.7, 0.5, 10), 0).model_copy(update={
        "validity": Validity(valid=False, reasons=["foreign CPU: other processes took 62% of the cell's 2 cores"])})
    store.append(contended)
    store.append(record(env, shas[0], "strict", metrics(7.7, 0.5, 10), 0, status="invalid"))
    res = ingest_cli(make_config(tmp_path, tmp_path / "repo"), tmp_path / "s")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "skipped 2 invalid record(s)" in res.stderr and "nightly/contended" in res.stderr and "62%" in res.stderr
    bench = json.loads((tmp_path / "asv" / "results" / "benchmarks.json").read_text())
    assert "nightly.quiet.ttft_ms" in bench
    assert not any(k.startswith(("nightly.contended.", "nightly.strict.")) for k in bench)


def test_publish_flags_a_throughput_drop_and_an_accuracy_drop_but_no_improvement(tmp_path, env):
    """Five nights on five commits; at the fourth, cell `drops` loses 10 % throughput and 2 points of
    accuracy (of 30 %), and cell `gains` gains as much; the noise is ±1 %."""
    shas = make_repo(tmp_path / "repo", 5)
    config = make_config(tmp_path, tmp_path / "repo")
    jitter = [1.0, 1.006, 0.995, 1.004, 0.997]
    for night, sha in enumerate(shas):
        after = night >= 3
        store = Store(tmp_path / f"night{night}")
        j = jitter[night]
        store.append(record(env, sha, "drops", metrics(200.0 * j * (0.9 if after else 1.0), 0.30 - (0.02 if after else 0.0), 150.0 * j), night))
        store.append(record(env, sha, "gains", metrics(200.0 * j * (1.1 if after else 1.0), 0.30 + (0.02 if after else 0.0), 150.0 * j * (0.8 if after else 1.0)), night))
        store.append(record(env, sha, "steady", metrics(200.0 * j, 0.30, 150.0 * j), night))
        res = ingest_cli(config, tmp_path / f"night{night}")
        assert res.returncode == 0, res.stdout + res.stderr
    publish(config)
    found = regressions(tmp_path / "asv" / "html")
    names = sorted(r["benchmark"] for r in found)
    assert names == ["nightly.drops.output_s_per_Mtok", "nightly.drops.text2sql_ex_error_ratio"], names
    by = {r["benchmark"]: r for r in found}
    tput = by["nightly.drops.output_s_per_Mtok"]
    assert tput["last"] / tput["best"] == pytest.approx(1 / 0.9, rel=0.02)
    # 2 points of accuracy at 30 %: the error goes 0.70 -> 0.72 (+2.9 %, under asv's default 5 %)
    assert by["nightly.drops.text2sql_ex_error_ratio"]["last"] == pytest.approx(0.72)
    # the step is placed at the fourth commit
    revs = json.loads((tmp_path / "asv" / "html" / "index.json").read_text())["revision_to_hash"]
    assert {revs[str(j["to"])] for j in tput["jumps"]} == {shas[3]}
    # the raw graph still exists (graphed, not judged)
    graphs = list((tmp_path / "asv" / "html" / "graphs").rglob("nightly.drops.graph_only.output_tok_s.json"))
    assert graphs


def test_two_result_sets_on_two_commits_are_enough(tmp_path, env):
    """The gate's situation: last good night and tonight; asv flags the single-commit step too."""
    shas = make_repo(tmp_path / "repo", 2)
    config = make_config(tmp_path, tmp_path / "repo")
    for night, sha in enumerate(shas):
        store = Store(tmp_path / f"n{night}")
        store.append(record(env, sha, "drops", metrics(200.0 * (0.9 if night else 1.0), 0.30 - (0.02 if night else 0.0), 150.0), night))
        store.append(record(env, sha, "gains", metrics(200.0 * (1.1 if night else 1.0), 0.30 + (0.02 if night else 0.0), 150.0), night))
        assert ingest_cli(config, tmp_path / f"n{night}").returncode == 0
    publish(config)
    names = sorted(r["benchmark"] for r in regressions(tmp_path / "asv" / "html"))
    assert names == ["nightly.drops.output_s_per_Mtok", "nightly.drops.text2sql_ex_error_ratio"], names
