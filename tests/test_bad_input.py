"""Bad input that used to get through validation, and keys that missed changes.

Every bad suite goes through the real CLI (``python -m harness.cli plan``): exit 2, one line per
problem naming the file, line, field and what is allowed, no traceback and none of pydantic's
internal validator names. Then the resource bounds, the samples a record keeps, the code key over
the packaged data (and the reference cache key that includes it), and the Hub commit a cell key is
made with, from a real huggingface_hub cache folder built here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import harness
from harness.base.wire import RequestTrace
from harness.measure.intervals import thin
from harness.measure.servemetrics import MAX_SAMPLES, summarize_passes
from harness.results.environment import package_files, source_key
from harness.spec.bounds import MAX_IN_FLIGHT, MAX_REQUESTS, MAX_TIMED_TOKENS

HEAD = """\
name: bad
model: tiny
precisions: [fp32]
"""
SERVE = """\
serving:
  engines:
    - kind: hf-static
      batch_size: 2
"""

BAD = {
    "binary.yaml": HEAD.encode() + b"description: caf\xe9 au lait\n",
    "control.yaml": (HEAD + "description: bell\x07\n").encode(),
    "duplicate.yaml": (HEAD + """\
workloads:
  - name: w
    num_requests: 4
    output_tokens: 8
    num_requests: 5
""" + SERVE + "seed: 1\nseed: 2\n").encode(),
    "union.yaml": (HEAD + """\
workloads:
  - name: w
    output_tokens:
      dist: normal
      value: 3
  - name: v
    prompt_tokens: lots
  - name: u
    output_tokens: {dist: uniform, low: 5}
training:
  modes: [{kind: full}]
  batch_size: [2, x]
""" + SERVE).encode(),
    "requests.yaml": (HEAD + """\
workloads:
  - name: w
    num_requests: 1000000000
""" + SERVE).encode(),
    "loads.yaml": (HEAD + """\
workloads:
  - name: w
    num_requests: 90000
    output_tokens: {dist: lognormal, median: 100, sigma: 1, max: 4096}
serving:
  engines:
    - kind: vllm-server
      loads:
        - {kind: poisson, rate_req_s: 4}
        - kind: concurrency
          concurrency: 100000
""").encode(),
}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> tuple[Path, int, dict[str, list[str]]]:
    """Every bad file through one ``harness plan``: (folder, exit code, error lines by file name)."""
    folder = tmp_path_factory.mktemp("bad")
    for name, data in BAD.items():
        (folder / name).write_bytes(data)
    res = _cli("plan", *(str(folder / n) for n in BAD))
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    lines: dict[str, list[str]] = {n: [] for n in BAD}
    for line in res.stderr.splitlines():
        assert line.startswith(f"error {folder}/"), line  # every line names its file
        lines[line.removeprefix(f"error {folder}/").split(":")[0]].append(line.removeprefix("error "))
    return folder, res.returncode, lines


def test_bad_files_exit_2_with_no_pydantic_internals(planned):
    _, rc, lines = planned
    assert rc == 2
    every = [line for ls in lines.values() for line in ls]
    assert all(lines[n] for n in BAD), lines  # each file has its problem
    for word in ("function-after", "function-wrap", "tagged-union", "shape:", ".int:", "list[int]", "Lengths"):
        assert not any(word in line for line in every), (word, every)


def test_a_file_that_is_not_utf8_names_its_line_offset_and_byte(planned):
    folder, _, lines = planned
    offset = BAD["binary.yaml"].index(b"\xe9")
    assert lines["binary.yaml"] == [f"{folder}/binary.yaml:4: not UTF-8 text: byte 0xe9 at offset {offset} "
                                    "(invalid continuation byte); a suite file is YAML in UTF-8"]
    bell = BAD["control.yaml"].index(b"\x07")
    assert lines["control.yaml"] == [f"{folder}/control.yaml:4: invalid YAML: character U+0007 at offset {bell} "
                                     "is not allowed (control characters other than tab and newline are not)"]


def test_a_key_written_twice_names_both_lines(planned):
    folder, _, lines = planned
    assert lines["duplicate.yaml"] == [
        f"{folder}/duplicate.yaml:8: workloads.0.num_requests: key 'num_requests' is written twice, on lines 6 "
        "and 8 (YAML would keep only the last); keep one",
        f"{folder}/duplicate.yaml:14: seed: key 'seed' is written twice, on lines 13 and 14 (YAML would keep "
        "only the last); keep one"]


def test_an_invalid_value_in_a_union_is_one_line_naming_field_and_allowed_values(planned):
    folder, _, lines = planned
    got = lines["union.yaml"]
    assert got == [
        f"{folder}/union.yaml:7: workloads.0.output_tokens.dist: Input should be 'fixed', 'uniform' or 'lognormal'",
        f"{folder}/union.yaml:10: workloads.1.prompt_tokens: expected a token count or a distribution (a mapping "
        "with dist: fixed (value), uniform (low, high) or lognormal (median, sigma, max))",
        f"{folder}/union.yaml:12: workloads.2.output_tokens: dist: uniform needs high",
        f"{folder}/union.yaml:15: training.batch_size.1: Input should be a valid integer, unable to parse string "
        "as an integer"], got


def test_resource_bounds_are_refused_with_the_reason(planned):
    folder, _, lines = planned
    assert lines["requests.yaml"] == [
        f"{folder}/requests.yaml:6: workloads.0.num_requests: at most {MAX_REQUESTS:,} requests per workload, "
        "got 1,000,000,000 (a pass keeps every request and its token times in memory; split a larger load into "
        "several workloads or cells)"]
    loads = lines["loads.yaml"]
    assert len(loads) == 3, loads
    assert loads[0].startswith(f"{folder}/loads.yaml:12: serving.engines.0.loads.0.max_concurrency: kind: poisson "
                               f"needs max_concurrency (at most {MAX_IN_FLIGHT})")
    assert "file-descriptor limit" in loads[0]
    assert loads[1].startswith(f"{folder}/loads.yaml:14: serving.engines.0.loads.1.concurrency: at most "
                               f"{MAX_IN_FLIGHT} requests in flight, got 100000")
    assert loads[2].startswith(f"{folder}/loads.yaml:6: workloads.0.num_requests: 90,000 requests x the longest "
                               "output (4,096 tokens) x serving.repeats (3) = 1,105,920,000 generated tokens")
    assert f"above the bound of {MAX_TIMED_TOKENS:,}" in loads[2]


def test_run_and_validate_refuse_bad_input_the_same_way(planned, tmp_path):
    folder, _, lines = planned
    for command in (["validate"], ["run", "--results", str(tmp_path / "results")]):
        res = _cli(*command, str(folder / "loads.yaml"))
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert [line.removeprefix("error ") for line in res.stderr.splitlines()] == lines["loads.yaml"]
    assert not (tmp_path / "results").exists()  # refused before anything ran


def test_a_plain_union_left_in_a_spec_still_reads_as_one_line():
    """The fallback for a union that is not by_shape: branch names dropped, the branches merged."""
    import yaml
    from pydantic import ValidationError

    from harness.base.specbase import StrictModel
    from harness.spec.source import format_errors
    from harness.spec.workloads import Lengths

    class Spec(StrictModel):
        size: int | list[int] | Lengths

    text = "size:\n  dist: nope\n"
    with pytest.raises(ValidationError) as info:
        Spec.model_validate(yaml.safe_load(text))
    [line] = format_errors(info.value, "f.yaml", yaml.compose(text))
    assert line == ("f.yaml:1: size: no allowed form fits: Input should be a valid integer; or Input should be a "
                    "valid list; or dist: Input should be 'fixed', 'uniform' or 'lognormal'")


def test_a_record_keeps_a_bounded_sample_of_itl_and_says_how_many_there_were():
    rng = np.random.default_rng(0)
    traces = []
    for r in range(20):  # 20 requests x 500 tokens: 9,980 gaps
        times = np.cumsum(rng.exponential(0.01, 500)).tolist()
        traces.append(RequestTrace(prompt_tokens=8, output_tokens=500, submitted_s=0.0, first_token_s=times[0],
                                   finished_s=times[-1], token_times_s=times))
    m = summarize_passes([(traces, 10.0)])
    gaps = np.concatenate([np.diff(t.token_times_s) for t in traces]) * 1000
    itl = m["itl_ms"]
    assert len(gaps) == 9980 > MAX_SAMPLES and len(itl.samples) == MAX_SAMPLES
    assert itl.value == pytest.approx(np.median(gaps))  # the figure is over the whole pool
    assert m["itl_p99_ms"].value == pytest.approx(np.percentile(gaps, 99))
    assert "median of 9,980 samples; 4,096 kept" in itl.description
    kept = np.asarray(itl.samples)
    assert kept.min() == pytest.approx(gaps.min()) and kept.max() == pytest.approx(gaps.max())
    assert abs(np.median(kept) - np.median(gaps)) < np.ptp(gaps) / MAX_SAMPLES * 3
    assert len(m["ttft_ms"].samples) == 20 and "evenly spaced" not in m["ttft_ms"].description  # small pools whole


def test_thin_keeps_order_statistics_in_their_original_order():
    values = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0])
    assert thin(values, 10).tolist() == values.tolist()
    assert thin(values, 3).tolist() == [1.0, 9.0, 3.0]  # ranks 0, 2.5->2, 5 of sorted [1,2,3,5,7,9]: 1, 3, 9
    with pytest.raises(ValueError, match="limit >= 2"):
        thin(values, 1)


def test_the_code_key_covers_the_packaged_data_and_the_reference_key_follows(tmp_path):
    pkg = tmp_path / "src" / "harness"
    shutil.copytree(Path(harness.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    names = {p.relative_to(pkg).as_posix() for p in package_files(pkg)}
    assert {"data/text2sql/items.jsonl", "data/text2sql/schema.sql", "data/corpus/plain_english.txt"} <= names
    before = source_key(pkg)
    (pkg / "__pycache__").mkdir(exist_ok=True)
    (pkg / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"junk")
    assert source_key(pkg) == before  # bytecode is not code
    script = textwrap.dedent("""
        import json, sys
        from pathlib import Path
        import harness
        from harness.base.host import Host
        from harness.base.resolved import ResolvedModel
        from harness.pipeline.planner import plan
        from harness.results import environment
        from harness.scenarios.inference.reference import _key
        from harness.spec.suite import load_suite
        assert harness.__file__.startswith(sys.argv[2]), harness.__file__
        cell = next(p.cell for p in plan(load_suite(sys.argv[1]), Host.detect()).cells if p.cell.scenario == "infer")
        model, protocol = ResolvedModel(path=Path(sys.argv[2])), {"corpus": "plain_english"}
        keys = []
        for edit in ("data/text2sql/items.jsonl", "data/corpus/plain_english.txt"):
            keys.append((environment.code_key(), _key(cell, model, protocol)))
            path = Path(sys.argv[2]) / "harness" / edit
            path.write_bytes(path.read_bytes() + b"\\n")
            environment.code_key.cache_clear()
        keys.append((environment.code_key(), _key(cell, model, protocol)))
        print(json.dumps(keys))
    """)
    suite = tmp_path / "s.yaml"
    suite.write_text(HEAD + "inference:\n  text2sql: null\n")
    env = os.environ | {"PYTHONPATH": str(tmp_path / "src")}
    res = subprocess.run([sys.executable, "-c", script, str(suite), str(tmp_path / "src")], capture_output=True,
                         text=True, timeout=120, env=env, cwd=tmp_path)  # not the checkout's harness
    assert res.returncode == 0, res.stderr
    keys = json.loads(res.stdout)
    assert len({k[0] for k in keys}) == 3 and len({k[1] for k in keys}) == 3  # each edit changed both keys
    assert source_key(pkg) != before


SHA1, SHA2 = "1" * 40, "2" * 40


def _snapshot(cache: Path, repo: str, commit: str) -> None:
    """A huggingface_hub cache entry as a download leaves it: refs/main -> commit, snapshots/<commit>/."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (folder / "snapshots" / commit / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


def test_a_hub_model_is_keyed_by_the_commit_its_revision_names(tmp_path):
    cache = tmp_path / "hf" / "hub"
    _snapshot(cache, "org/name", SHA1)
    suite = tmp_path / "s.yaml"
    suite.write_text(HEAD.replace("model: tiny", "model: hub:org/name") + "inference:\n  text2sql: null\n")
    script = textwrap.dedent("""
        import json, sys
        from harness.base.host import Host
        from harness.pipeline.planner import plan
        from harness.spec.suite import load_suite
        cell = plan(load_suite(sys.argv[1]), Host.detect()).cells[0].cell
        pinned = cell.model.pinned()
        resolved = pinned.resolve()
        at_sha = load_suite(sys.argv[1], model="hub:org/name@" + "3" * 40).model.pinned()
        print(json.dumps({"key": cell.key(), "unpinned": cell.model.commit, "commit": pinned.commit,
                          "provenance": resolved.provenance, "path": str(resolved.path), "at_sha": at_sha.commit}))
    """)
    env = os.environ | {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}

    def run() -> dict:
        res = subprocess.run([sys.executable, "-c", script, str(suite)], capture_output=True, text=True,
                             timeout=120, env=env)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    first = run()
    assert (first["unpinned"], first["commit"], first["at_sha"]) == (None, SHA1, "3" * 40)
    assert first["provenance"] == {"source": "hub", "id": "org/name", "revision": None, "commit": SHA1}
    assert first["path"] == str(cache / "models--org--name" / "snapshots" / SHA1)
    assert run()["key"] == first["key"]  # the same commit: the same key
    _snapshot(cache, "org/name", SHA2)  # upstream moved and was fetched
    second = run()
    assert second["commit"] == SHA2 and second["provenance"]["commit"] == SHA2
    assert second["key"] != first["key"]
