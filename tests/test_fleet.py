"""Past one machine: the logical machine in every record, sharding by cost, merging stores, the GitHub
Actions matrix and submitit's job arrays. Planning, sharding and merging are checked on the shipped suites'
plans and on stores of records built in code (their durations and machines are the inputs under test); the
machine flag, the shard runs and the job array run real `harness` processes on the tiny model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness.base.host import Host
from harness.pipeline.planner import plan
from harness.pipeline.shard import DEFAULT_S, assign, last_durations, parse_shard, shard_cells, units
from harness.results.machine import default_machine, machine_of
from harness.results.records import Metric, Record
from harness.results.store import Store, read_records
from harness.spec.suite import load_suite

REPO = Path(__file__).resolve().parent.parent
SUITES = sorted((REPO / "suites").glob("*.yaml"))


def cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "250", **(env or {})})


@pytest.fixture(scope="module")
def env():
    from harness.results.environment import capture

    return capture()


@pytest.fixture(scope="module")
def plans():
    host = Host.detect()
    return [plan(load_suite(p, model="tiny"), host, source=str(p), model_override="tiny") for p in SUITES]


def record(env, cell: str, *, machine: str | None, suite: str = "s", key: str = "k", duration: float = 1.0,
           tok_s: float = 100.0, day: int = 0, status: str = "ok") -> Record:
    started = datetime(2026, 12, 1, tzinfo=timezone.utc) + timedelta(days=day)
    return Record(record_id=hashlib.sha1(f"{cell}{machine}{day}{key}{tok_s}".encode()).hexdigest(), suite=suite,
                  cell_id=cell, cell_key=key, code_key="c", cell={"scenario": "serve"}, status=status,
                  metrics={"output_tok_s": Metric(value=tok_s, unit="tok/s")} if status == "ok" else {},
                  environment=env.model_copy(update={"machine": machine}), seed=0, started_at=started,
                  duration_s=duration, command=f"harness run s.yaml --only {cell}")


def test_the_default_machine_comes_from_the_devices_and_older_records_read_as_it(env):
    from harness.base.host import GPU

    h100 = env.model_copy(update={"gpus": [GPU(name="NVIDIA H100 80GB HBM3", memory_bytes=80 * 2**30)] * 2})
    assert default_machine(h100) == "h100-80gb-x2"
    assert default_machine(env.model_copy(update={"gpus": []})) == f"cpu-{env.cpu_count}c"
    assert record(env, "a", machine=None).environment.machine is None  # a record written before the field
    assert machine_of(record(env, "a", machine=None)) == default_machine(env)
    assert machine_of(record(env, "a", machine="l4-ci")) == "l4-ci"
    with pytest.raises(ValueError, match="runner name"):
        type(env).model_validate(env.model_dump() | {"machine": "../etc"})


def test_every_cell_lands_in_exactly_one_shard_and_engine_starts_never_split(plans, env, tmp_path):
    """For N = 1..7, on the shipped suites' plans with durations from a store: a partition of every cell
    (skips included), each engine start's cells in one shard, the longest shard within the longest unit of
    the ideal (greedy longest-first), the same split every time."""
    every = [pc.cell.id for p in plans for pc in p.cells]
    groups: dict[str, set[str]] = {}
    for p in plans:
        for pc in p.cells:
            if pc.cell.group and pc.skip is None:
                groups.setdefault(pc.cell.group, set()).add(pc.cell.id)
    assert any(len(g) > 1 for g in groups.values())  # the serving suite's shared starts
    # a store with known durations on this machine, and other figures on another machine (not used)
    here = default_machine(env)
    store = Store(tmp_path / "store")
    for i, (p, pc) in enumerate((p, pc) for p in plans for pc in p.cells):
        store.append(record(env, pc.cell.id, machine=None, suite=p.suite, key=pc.cell.key(), duration=10.0 + 37 * (i % 9)))
        store.append(record(env, pc.cell.id, machine="elsewhere", suite=p.suite, key=pc.cell.key(), duration=9999.0))
    durations = last_durations(read_records(tmp_path / "store"), here)
    assert durations and max(durations.values()) < 9999
    all_units = units(plans, durations)
    for n in range(1, 8):
        shards = assign(all_units, n)
        cells = [c for s in shards for c in s.cells]
        assert sorted(cells) == sorted(every) and len(cells) == len(set(cells)), n
        for members in groups.values():
            assert sum(bool(members & set(s.cells)) for s in shards) == 1, (n, members)
        longest_unit = max(u.cost_s for u in all_units)
        ideal = max(sum(u.cost_s for u in all_units) / n, longest_unit)
        assert max(s.cost_s for s in shards) <= ideal + longest_unit, n
        assert [s.cells for s in assign(units(plans, durations), n)] == [s.cells for s in shards]  # stable
    # no store: the scenario defaults, the same on every machine
    assert {u.cost_s for u in units(plans)} <= {0.0, *(k * v for v in DEFAULT_S.values() for k in range(1, 9))}
    assert shard_cells(plans, 2, 3) == set(assign(units(plans), 3)[1].cells)
    with pytest.raises(Exception, match="K/N"):
        parse_shard("4/3")


def test_plan_prints_the_shards_and_run_takes_one(tmp_path, env):
    """`harness plan --shards N` prints each shard's cells and predicted time; `--shard K/N` its cells only; the
    union of `harness run --shard K/N` over K is the whole suite, each cell run once (real cells, tiny model)."""
    suite = REPO / "suites" / "serving.yaml"
    res = cli("plan", suite, "--model", "tiny", "--shards", "3")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 shards" in res.stdout and "1/3" in res.stdout and "predicted" in res.stdout and "longest shard" in res.stdout
    # vLLM's static and continuous cells share one start: joined by '+' in one shard
    assert "serving-serve-vllm-static-bf16+serving-serve-vllm-continuous-bf16" in res.stdout, res.stdout
    one = cli("plan", suite, "--model", "tiny", "--shard", "1/3")
    assert one.returncode == 0 and "shard 1/3:" in one.stdout
    assert cli("plan", suite, "--shard", "0/3").returncode == 2


def test_pytest_takes_a_shard_or_named_cells():
    """`pytest suites/ --harness-shard K/N` collects shard K's cells, the shards together every cell once;
    `--harness-only` (a matrix job's cells) collects exactly those, and refuses an unknown id."""
    def collected(*args: str) -> list[str]:
        res = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "suites"), "--collect-only", "-q", "-p", "no:cacheprovider",
                              "--harness-suite", "serving", "--harness-model", "tiny", *args],
                             capture_output=True, text=True, timeout=300, cwd=REPO)
        assert res.returncode in (0, 5), res.stdout[-2000:] + res.stderr[-2000:]
        return [line.split("[", 1)[1].rstrip("]") for line in res.stdout.splitlines() if "::" in line and "[" in line]

    every = collected()
    shards = [collected("--harness-shard", f"{k}/3") for k in (1, 2, 3)]
    assert sorted(c for s in shards for c in s) == sorted(every) and len(every) == 6
    assert collected("--harness-only", "serving-serve-hf-static-bf16") == ["serving-serve-hf-static-bf16"]
    bad = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "suites"), "--collect-only", "-q", "--harness-suite",
                          "serving", "--harness-model", "tiny", "--harness-only", "serving-serve-hf-statik-bf16"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert bad.returncode != 0 and "did you mean 'serving-serve-hf-static-bf16'" in bad.stdout + bad.stderr


def test_records_carry_the_machine_and_stores_merge_without_losing_or_doubling(tmp_path, env):
    """`harness run --machine` writes it into every record (here: a suite whose cells are all planned skips, so
    no model runs); `harness merge` takes two machines' stores and a copy of one: every record once, a torn and
    a foreign line reported with file:line; resume on one machine does not count another machine's records."""
    suite = tmp_path / "s.yaml"
    suite.write_text("name: fl\nmodel: tiny\ndevice: cuda\nprecisions: [{kind: fp32}, {kind: bf16}]\n"
                     "inference: {seq_len: 64, stride: 64, text2sql: null}\n")
    for m in ("runner-a", "runner-b"):
        res = cli("run", suite, "--machine", m, "--results", tmp_path / m)
        assert res.returncode == 0, res.stdout + res.stderr
    res = cli("run", suite, "--results", tmp_path / "runner-c", env={"HARNESS_MACHINE": "runner-c"})
    assert res.returncode == 0
    assert {machine_of(r) for r in read_records(tmp_path / "runner-c")} == {"runner-c"}
    bad = cli("run", suite, "--machine", "no/slash", "--results", tmp_path / "x")
    assert bad.returncode == 2 and "machine name" in bad.stderr
    a = read_records(tmp_path / "runner-a")
    assert [machine_of(r) for r in a] == ["runner-a", "runner-a"] and all(r.status == "skipped" for r in a)
    # a copy of runner-a's store (an artifact downloaded twice), with a torn and a foreign line
    copy = tmp_path / "copy"
    copy.mkdir()
    text = (tmp_path / "runner-a" / "fl.jsonl").read_text()
    (copy / "fl.jsonl").write_text(text + '{"hello": "not a record"}\n{"record_id": "torn')
    res = cli("merge", tmp_path / "merged", tmp_path / "runner-a", tmp_path / "runner-b", copy)
    assert res.returncode == 0, res.stdout + res.stderr
    merged = read_records(tmp_path / "merged")
    assert len(merged) == 4 and len({r.record_id for r in merged}) == 4
    assert sorted(machine_of(r) for r in merged) == ["runner-a", "runner-a", "runner-b", "runner-b"]
    assert f"{copy / 'fl.jsonl'}:3: unreadable record skipped" in res.stderr, res.stderr
    assert f"{copy / 'fl.jsonl'}:4: ignoring a torn last line" in res.stderr
    assert "2 line(s) skipped" in res.stdout and "fl +4" in res.stdout
    again = cli("merge", tmp_path / "merged", tmp_path / "runner-b")
    assert again.returncode == 0 and "nothing new" in again.stdout and len(read_records(tmp_path / "merged")) == 4
    # resume is per machine: runner-a's records are not runner-b's results
    store = Store(tmp_path / "merged")
    key = a[0].code_key
    assert {machine_of(r) for r in store.finished("fl", key, "runner-b").values()} == {"runner-b"}


def test_compare_and_report_keep_machines_apart(tmp_path, env):
    """One store, two runners: a slower night on runner-b is b's regression only (named with its machine); runner-a
    is never b's base; across machines only when asked, and then labelled; the report has a section per machine."""
    from harness.track.compare import compare
    from harness.track.report import build

    base = [record(env, "c1", machine="runner-a", tok_s=100), record(env, "c1", machine="runner-b", tok_s=50)]
    new = [record(env, "c1", machine="runner-a", tok_s=101, day=1), record(env, "c1", machine="runner-b", tok_s=40, day=1)]
    result = compare(base, new)
    assert [(c.machine, c.verdict) for c in result.changes] == [("runner-a", "unchanged"), ("runner-b", "regression")]
    assert result.failures == ["regression: s/c1 @ runner-b output_tok_s"]
    only_a = compare(base, new, machine="runner-a")
    assert not only_a.failures and [c.machine for c in only_a.changes] == ["runner-a"]
    # a machine with no base: its cells are new, not judged against another runner's
    fresh = compare(base[:1], new[1:])
    assert not fresh.changes and fresh.only_new == ["s/c1 @ runner-b"] and fresh.lost[0].machine == "runner-a"
    across = compare(base[:1], new[1:], across_machines=True)
    assert across.changes[0].machine == "runner-a -> runner-b" and "across machines" in across.changes[0].caveat
    # the CLI
    for name, records in (("base", base), ("new", new)):
        store = Store(tmp_path / name)
        for r in records:
            store.append(r)
    res = cli("compare", tmp_path / "base", tmp_path / "new")
    assert res.returncode == 1 and "s/c1 @ runner-b" in res.stdout
    assert cli("compare", tmp_path / "base", tmp_path / "new", "--machine", "runner-a").returncode == 0
    rep = build(base + new, tmp_path / "report", source="test")
    text = Path(rep.markdown).read_text()
    assert "runner-a" in text and "runner-b" in text
    assert sum(1 for line in text.splitlines() if line.startswith("## ") and "runner-" in line) == 2, text[:2000]


def test_matrix_places_each_cell_on_a_runner_that_can_run_it(tmp_path):
    """`harness matrix`: a cell of two ranks never on the one-GPU runner, CUDA-only kernels never on the CPU
    runner, shards sized to the budget, every job's cells named; a workflow using it through fromJson passes
    actionlint."""
    runners = tmp_path / "runners.yaml"
    runners.write_text("runners:\n"
                       "  - {machine: l4-x1, labels: [self-hosted, l4], gpus: 1, gpu_name: NVIDIA L4, gpu_memory_gib: 24}\n"
                       "  - {machine: h100-x2, labels: [self-hosted, h100x2], gpus: 2, gpu_name: NVIDIA H100, gpu_memory_gib: 80}\n"
                       "  - {machine: cpu-4c, labels: [ubuntu-latest], cpus: 4, suites: [quantization]}\n")
    res = cli("matrix", *SUITES, "--runners", runners, "--model", "tiny", "--budget-min", "10")
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = json.loads(res.stdout)["include"]
    assert len(jobs) <= 64 and {j["machine"] for j in jobs} >= {"l4-x1", "h100-x2"}
    where = {c: j["machine"] for j in jobs for c in j["cells"]}
    assert len(where) == sum(len(j["cells"]) for j in jobs)  # each cell in one job
    distributed = [c for c in where if c.startswith("distributed-")]
    assert distributed and {where[c] for c in distributed} == {"h100-x2"}  # two ranks need two GPUs
    assert where["quantization-infer-gptq-marlin"] != "cpu-4c"  # Marlin is a CUDA kernel
    for j in jobs:
        assert j["shard"].split("/")[1] == str(sum(k["machine"] == j["machine"] for k in jobs))
    bad = tmp_path / "bad.yaml"
    bad.write_text("runners:\n  - {machine: a, labels: [x], gpus: -1}\n")
    res = cli("matrix", SUITES[0], "--runners", bad)
    assert res.returncode == 2 and f"{bad}:2: runners.0.gpus" in res.stderr, res.stderr
    # the nightly's shape: a plan job's output feeds the bench job's matrix through fromJson
    workflow = tmp_path / "w.yml"
    workflow.write_text(WORKFLOW)
    from tests.test_workflows import _lint  # actionlint with our runners' labels

    lint = _lint([workflow], tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_vllm_tensor_parallel_is_planned_only_where_the_gpus_are(tmp_path):
    """vLLM's tensor x pipeline parallel size: a skip with the reason on this CPU host and on a one-GPU runner,
    placed by `harness matrix` on the runner with enough GPUs; the engine gets the sizes it was given."""
    from harness.pipeline.fleet import matrix
    from harness.spec.runners import Runners

    path = tmp_path / "tp.yaml"
    path.write_text("name: tp\nmodel: tiny\nprecisions: [{kind: bf16}]\n"
                    "workloads: [{name: w, num_requests: 2, prompt_tokens: 16, output_tokens: [4]}]\n"
                    "serving: {engines: [{kind: vllm-continuous, tensor_parallel_size: 2, pipeline_parallel_size: 2}]}\n")
    suite = load_suite(path)
    (cpu,) = plan(suite, Host.detect()).cells
    assert cpu.skip.startswith("pipeline_parallel_size 2: vLLM's CPU build")  # tensor parallelism alone runs (below)
    runners = Runners.model_validate({"runners": [
        {"machine": "one", "labels": ["a"], "gpus": 1}, {"machine": "four", "labels": ["b"], "gpus": 4}]})
    like = Host.detect().model_copy(update={"packages": {**Host.detect().packages, "vllm": "0.32.0"}})
    result = matrix([(str(path), suite)], runners, like)
    assert [(j.machine, j.cells) for j in result.include] == [("four", ["tp-serve-vllm-continuous-bf16"])]
    (on_one,) = plan(suite, runners.runners[0].host(like)).cells
    assert on_one.skip == "tensor x pipeline parallel size 4 needs 4 GPUs per node; this host has 1"
    (on_four,) = plan(suite, runners.runners[1].host(like)).cells
    assert on_four.skip is None


def test_vllm_over_several_nodes_is_planned_per_node_and_never_a_matrix_job(tmp_path, monkeypatch):
    """vLLM's own multi-node options: each node needs its share of the ranks (GPUs per node, cores on CPU),
    the engine gets nnodes, node_rank and node 0's address from the settings or the harness' environment,
    a node count that does not divide the ranks is refused, and `harness matrix` never places a cell whose
    nodes must start together on one runner."""
    from harness.pipeline.fleet import matrix
    from harness.spec.runners import Runners

    path = tmp_path / "mn.yaml"
    path.write_text("name: mn\nmodel: tiny\nprecisions: [{kind: bf16}]\n"
                    "workloads: [{name: w, num_requests: 2, prompt_tokens: 16, output_tokens: [4]}]\n"
                    "serving: {engines: [{kind: vllm-continuous, tensor_parallel_size: 4, nnodes: 2}]}\n")
    suite = load_suite(path)
    runners = Runners.model_validate({"runners": [
        {"machine": "one", "labels": ["a"], "gpus": 1}, {"machine": "two", "labels": ["b"], "gpus": 2}]})
    like = Host.detect().model_copy(update={"packages": {**Host.detect().packages, "vllm": "0.32.0"}})
    (on_one,) = plan(suite, runners.runners[0].host(like)).cells
    assert on_one.skip == "tensor x pipeline parallel size 4 (2 on each of 2 nodes) needs 2 GPUs per node; this host has 1"
    (on_two,) = plan(suite, runners.runners[1].host(like)).cells
    assert on_two.skip is None
    result = matrix([(str(path), suite)], runners, like)
    assert result.include == []
    assert "spans 2 nodes, which must start together" in result.unplaced["mn-serve-vllm-continuous-bf16"]
    engine = on_two.cell.engine
    for var in ("HARNESS_NODE_RANK", "HARNESS_RDZV_ENDPOINT", "SLURM_NODEID", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="needs node_rank, the endpoint of node 0"):
        engine.nodes()
    monkeypatch.setenv("HARNESS_NODE_RANK", "1")
    monkeypatch.setenv("HARNESS_RDZV_ENDPOINT", "10.0.0.1:29400")
    args = engine.engine_args(on_two.cell)
    assert {k: args[k] for k in ("tensor_parallel_size", "nnodes", "node_rank", "master_addr", "master_port")} == {
        "tensor_parallel_size": 4, "nnodes": 2, "node_rank": 1, "master_addr": "10.0.0.1", "master_port": 29400}
    assert engine.follows(on_two.cell) and engine.net_env(on_two.cell) == {}  # across hosts: the cluster's settings
    with pytest.raises(Exception, match="nnodes 3 must divide tensor x pipeline parallel size 4"):
        load_suite(_write(tmp_path / "bad.yaml", path.read_text().replace("nnodes: 2", "nnodes: 3")))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not Host.detect().has("vllm"), reason="vLLM is not installed")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="tensor parallelism on CPU needs a core per rank")
def test_vllm_tensor_parallel_runs_on_cpu(tmp_path):
    """vLLM's CPU build splits the layers over two ranks, each bound to its own core: the cell serves its
    workload with exact output lengths; more ranks than cores is a skip with the reason."""
    from tests.conftest import ok, run_suite_text

    records = run_suite_text(tmp_path, "name: tpc\nmodel: tiny\ntimeout_s: 600\nprecisions: [{kind: bf16}]\n"
                                       "workloads: [{name: w, num_requests: 4, prompt_tokens: 16, output_tokens: [4, 8]}]\n"
                                       "serving: {repeats: 1, engines: [{kind: vllm-continuous, max_num_seqs: 4, "
                                       "tensor_parallel_size: 2}, {kind: vllm-continuous, name: tp64, "
                                       "tensor_parallel_size: 64}]}\n")[3]
    r = ok(records, "tpc-serve-vllm-continuous-bf16")
    assert r.info["engine"]["engine_args"]["tensor_parallel_size"] == 2
    assert not r.info["length_mismatches"] and r.metric("output_tokens") == sum(r.info["output_lengths"])
    wide = records["tpc-serve-tp64-bf16"]
    assert wide.status == "skipped" and "binds each rank to cores of its own" in wide.reason


@pytest.mark.slow
@pytest.mark.skipif(not Host.detect().has("vllm"), reason="vLLM is not installed")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two nodes on loopback need a core each")
def test_a_vllm_engine_over_two_nodes_on_loopback(tmp_path):
    """Two "nodes" on 127.0.0.1, each a `harness run` of the same suite on its own core (HARNESS_NODE_RANK 0
    and 1): vLLM's tensor-parallel ranks span them (one each). Node 0 serves and records every cell (a
    server's two load levels on one start, then an offline engine on another start at the same port); node 1
    runs its rank headless through both starts, follows node 0 from one to the next, and stores nothing."""
    from harness.base.nodes import free_port

    port = free_port()
    suite = tmp_path / "mnv.yaml"
    nodes = f"tensor_parallel_size: 2, nnodes: 2, master_addr: 127.0.0.1, master_port: {port}, max_num_seqs: 4"
    suite.write_text("name: mnv\nmodel: tiny\ntimeout_s: 600\nprecisions: [{kind: bf16}]\n"
                     "workloads: [{name: w, num_requests: 4, prompt_tokens: 16, output_tokens: [4, 8]}]\n"
                     "serving:\n  repeats: 1\n  warmup: 0\n  engines:\n"
                     f"    - {{kind: vllm-server, {nodes}, loads: [{{kind: concurrency, concurrency: 1}}, "
                     "{kind: concurrency, concurrency: 4}]}\n"
                     f"    - {{kind: vllm-continuous, {nodes}}}\n")
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(suite), "--results", str(tmp_path / f"node{n}")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=lambda n=n: os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[n]}),
                              env={**os.environ, "HARNESS_NODE_RANK": str(n), "COLUMNS": "250"}) for n in (0, 1)]
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    records = {r.cell_id: r for r in read_records(tmp_path / "node0")}
    assert sorted(records) == ["mnv-serve-vllm-continuous-bf16", "mnv-serve-vllm-server-bf16-c1", "mnv-serve-vllm-server-bf16-c4"]
    for r in records.values():
        assert r.status == "ok", (r.cell_id, r.reason, r.log_tail)
        assert r.info["nodes"] == {"nnodes": 2, "node_rank": 0, "master": f"127.0.0.1:{port}", "local_ranks": 1}
        args = r.info["engine"]["engine_args"]
        assert (args["tensor_parallel_size"], args["nnodes"], args["node_rank"]) == (2, 2, 0)
        assert not r.info["length_mismatches"] and r.metric("output_tokens") == sum(r.info["output_lengths"])
    assert records["mnv-serve-vllm-server-bf16-c4"].info["engine"]["engine_start"]["started_by"] == "mnv-serve-vllm-server-bf16-c1"
    assert not list((tmp_path / "node1").glob("*.jsonl")) or not read_records(tmp_path / "node1")
    assert outs[1].count("(node 1 of 2: node 0 records this cell, nothing is stored here)") == 3
    logs = "".join(p.read_text() for p in (tmp_path / "node1" / "logs").glob("*.log"))
    assert logs.count(f"node 1 of 2, headless for node 0 at 127.0.0.1:{port}") == 2  # one per start of node 0


WORKFLOW = """
name: fleet
on: workflow_dispatch
jobs:
  plan:
    runs-on: ubuntu-latest
    outputs:
      matrix: ${{ steps.m.outputs.matrix }}
    steps:
      - id: m
        run: echo "matrix=$(harness matrix suites/*.yaml --runners runners.yaml)" >> "$GITHUB_OUTPUT"
  bench:
    needs: plan
    strategy:
      fail-fast: false
      matrix: ${{ fromJson(needs.plan.outputs.matrix) }}
    runs-on: ${{ matrix.runs_on }}
    steps:
      - env:
          CELLS: ${{ join(matrix.cells, ' ') }}
          MACHINE: ${{ matrix.machine }}
        run: |
          args=()
          for c in $CELLS; do args+=(--only "$c"); done
          harness run suites/*.yaml --machine "$MACHINE" "${args[@]}"
"""


@pytest.mark.slow
def test_submitit_runs_a_two_shard_suite_and_merges_the_stores(tmp_path):
    """`harness submit --executor local --shards 2`: submitit's local executor runs each shard's `harness run`
    (real cells on the tiny model, one after the other), and the shard stores are merged into the results."""
    suite = tmp_path / "s.yaml"
    suite.write_text("name: sub\nmodel: tiny\ntimeout_s: 600\nprecisions: [{kind: fp32}, {kind: bf16}]\n"
                     "workloads: [{name: w, num_requests: 4, prompt_tokens: 16, output_tokens: [4, 8]}]\n"
                     "serving: {repeats: 1, warmup: 0, engines: [{kind: hf-static, batch_size: 4}]}\n")
    res = cli("submit", suite, "--executor", "local", "--shards", "2", "--results", tmp_path / "results",
              "--machine", "cpu-ci", timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "1/2: done" in res.stdout and "2/2: done" in res.stdout
    shards = [read_records(tmp_path / "results" / "submit" / f"shard-{k}") for k in (1, 2)]
    assert sorted(len(s) for s in shards) == [1, 1]
    merged = {r.cell_id: r for r in read_records(tmp_path / "results")}
    assert sorted(merged) == ["sub-serve-hf-static-bf16", "sub-serve-hf-static-fp32"]
    assert all(r.status == "ok" and machine_of(r) == "cpu-ci" and r.metric("output_tok_s") > 0 for r in merged.values())
    logs = list((tmp_path / "results" / "submit" / "submitit").rglob("*_log.out"))
    assert len(logs) == 2  # one submitit task per shard


@pytest.mark.slow
def test_submit_runs_a_ddp_cell_over_two_nodes_on_loopback(tmp_path):
    """`harness submit --executor local`: a DDP cell over two nodes is a job of its own, one task per node
    (two `harness run` of the cell side by side, one rank each, gloo, the task rank as node rank), joined
    by torchrun's c10d rendezvous at node 0's endpoint; node 0's record holds both ranks with their node
    ranks and the ZeRO prediction for a world of two; node 1 stores nothing; the job's store is merged."""
    suite = tmp_path / "mn.yaml"
    suite.write_text("""
name: mn
model: tiny
timeout_s: 600
precisions: [{kind: fp32}]
training:
  modes: [{kind: full}]
  parallel: [{kind: ddp, nproc: 1, nnodes: 2}]
  batch_size: 2
  seq_len: 64
  warmup_steps: 1
  steps: 2
""")
    res = cli("submit", suite, "--executor", "local", "--results", tmp_path / "results", timeout=900,
              env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "mn-train-full-fp32-ddp on 2 nodes: done" in res.stdout
    (node0,) = read_records(tmp_path / "results" / "submit" / "nodes-1")  # node 1 stored nothing beside it
    (record,) = read_records(tmp_path / "results")
    assert record.record_id == node0.record_id
    assert record.status == "ok", (record.reason, record.log_tail)
    ranks = record.info["ranks"]
    # c10d gives the nodes their ranks in the order they join: one rank on each node
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    assert sorted(r["node_rank"] for r in ranks) == [0, 1]
    assert record.info["world_size"] == 2 and record.info["nodes"] == {"nnodes": 2, "node_rank": 0}
    assert len(record.metrics["params_bytes"].samples) == 2
    assert record.metric("params_bytes") == record.metric("params_bytes_analytic")  # DDP replicates: each rank all
