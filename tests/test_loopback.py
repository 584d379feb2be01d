"""Nobody let in: the harness's services listen on loopback only and answer only the harness, and record
text cannot reach HTML, shell or git unescaped, nor private facts the public site.

- The vLLM server (one real start on the tiny model): every listening socket of its process tree is
  on 127.0.0.1, a request without the start's key is refused on every path (dev-mode routes included),
  the key is on no command line and in no log, and the health check knows the server by its name.
- A distributed cell (one real torchrun, 2 gloo ranks): every listening socket of the cell's tree
  (the launcher's store, torchrun, the ranks) is on 127.0.0.1, where a plain TCPStore would listen on
  every interface.
- Children die with their parent through an exec wrapper, not ``preexec_fn``.
- asv's HTML gets escaped commands; a record's unsafe commit or metric name is refused; the
  reproduce command is shell-quoted and reruns the cell into its store; the published view of a
  record has no hostname, home folder or log tail.
"""

from __future__ import annotations

import html
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.base.host import Host
from harness.results.records import Metric, Record
from harness.results.store import Store

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::1"}
needs_vllm = pytest.mark.skipif(not Host.detect().has("vllm"), reason="vLLM is not installed")


def _listening(pids: list[int]) -> dict[tuple[str, int], int]:
    """(address, port) -> pid of every listening TCP socket of ``pids`` (gone processes are skipped)."""
    import psutil

    out: dict[tuple[str, int], int] = {}
    for pid in pids:
        try:
            for c in psutil.Process(pid).net_connections("inet"):
                if c.status == psutil.CONN_LISTEN:
                    out[(c.laddr.ip, c.laddr.port)] = pid
        except psutil.Error:
            continue
    return out


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


class _Watch:
    """Samples the listening sockets of this process's tree every 50 ms while the ``with`` block runs."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.update(_listening(_tree(os.getpid())))
            time.sleep(0.05)

    def __enter__(self) -> "_Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# processes ----------------------------------------------------------------------------------------

PARENT = """
import subprocess, sys, time
from harness.base.proctree import with_parent_death
child = subprocess.Popen(with_parent_death([sys.executable, "-c", "import time; time.sleep(120)"]))
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_wrapped_child_becomes_the_command_in_the_group_and_dies_with_its_parent():
    import psutil

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        deadline = time.monotonic() + 20
        while "harness.base.proctree" in " ".join(child.cmdline()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.cmdline()[1:] == ["-c", "import time; time.sleep(120)"]  # exec'd: same pid, the real program
        assert os.getpgid(child.pid) == os.getpgid(parent.pid)  # a process-group kill still reaches it
        parent.kill()
        parent.wait()
        gone, _ = psutil.wait_procs([child], timeout=10)
        assert gone, "the child outlived its parent"
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)  # whatever is left of the group (nothing, when it passed)
        except ProcessLookupError:
            pass
        parent.wait()


def test_the_wrapper_refuses_a_dead_parent_and_a_malformed_command_line():
    run = lambda *a: subprocess.run([sys.executable, "-m", "harness.base.proctree", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run("--signal", "15", "--parent", "1", "--", "true").returncode == 1  # its parent is not pid 1: gone
    bad = run("--signal", "15", "--", "true")
    assert bad.returncode == 2 and "usage:" in bad.stderr
    missing = run("--signal", "15", "--parent", str(os.getpid()), "--", "no-such-program-here")
    assert missing.returncode == 127 and "cannot run 'no-such-program-here'" in missing.stderr


# the vLLM server ----------------------------------------------------------------------------------

SERVER_SUITE = """
name: lo
model: tiny
seed: 0
timeout_s: 600
precisions: [fp32]
workloads: [{name: w, source: random, num_requests: 4, prompt_tokens: 16, output_tokens: 4}]
serving:
  engines: [{kind: vllm-server, max_num_seqs: 4, max_model_len: 64, loads: [{kind: concurrency, concurrency: 2}]}]
"""
# Routes that must not answer without the key: inference, health and metrics, and dev mode's.
GUARDED = [("GET", "/v1/models"), ("POST", "/v1/completions"), ("GET", "/health"), ("GET", "/metrics"),
           ("POST", "/invocations"), ("POST", "/reset_prefix_cache"), ("POST", "/collective_rpc"), ("POST", "/sleep"),
           ("GET", "/is_sleeping"), ("GET", "/no/such/route")]


def _server_cell():
    import yaml

    from harness.pipeline.planner import plan
    from harness.spec.suite import Suite

    (pc,) = plan(Suite.model_validate(yaml.safe_load(SERVER_SUITE)), Host.detect()).cells
    assert pc.skip is None, pc.skip
    return pc.cell


@needs_vllm
@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_the_server_listens_on_loopback_and_refuses_requests_without_its_key(capfd):
    from transformers import AutoTokenizer

    from harness.engines.vllm_server import SERVED_PREFIX, http_call

    cell = _server_cell()
    engine, model = cell.engine, cell.model.resolve()
    with _Watch() as watch:
        server = engine.start(cell, model)
        try:
            listening = _listening(_tree(server.proc.pid))
            # every request: wrong key, no key
            refused = {(m, p): http_call(server.base_url + p, key, method=m)[0]
                       for m, p in GUARDED for key in (None, "not-the-key")}
            status, body = server.request("/v1/models")
            assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == [server.served_name]
            assert engine.reset_cache(server) is True  # dev mode's route, with the key
            requests = cell.workload.requests(AutoTokenizer.from_pretrained(model.path))
            run = engine.run(server, cell, model, requests)
            cmdlines = [" ".join(psutil_cmdline(pid)) for pid in _tree(server.proc.pid)]
        finally:
            engine.stop(server)
    assert server.proc.poll() is not None
    # 1. loopback only: the HTTP port, and whatever else vLLM's processes listen on
    assert ("127.0.0.1", server.port) in listening, listening
    assert {ip for ip, _ in watch.seen} <= LOOPBACK, watch.seen
    # 2. nothing answers without the key, on any path (vLLM's own check covers only /v1 and a few more)
    assert set(refused.values()) == {401}, {k: v for k, v in refused.items() if v != 401}
    # 3. with it, the harness's client works; the record says dev mode was on and why
    assert all(t.error is None for t in run.traces) and len(run.traces) == 4
    info = run.info["server"]
    assert info["dev_mode"] is True and "/reset_prefix_cache" in info["dev_mode_why"]
    assert server.served_name.startswith(SERVED_PREFIX) and len(server.served_name) > len(SERVED_PREFIX) + 8
    # 4. the key is on no command line (any user can read those) and in no log
    assert server.api_key not in "\n".join(cmdlines) and "--api-key" not in "\n".join(cmdlines)
    assert "harness.engines.vllm_guard.RequireKey" in "\n".join(cmdlines)
    out, err = capfd.readouterr()
    assert server.api_key not in out + err and "/v1/models" in out + err  # the server's log did reach us
    assert server.api_key not in json.dumps(run.info)


def psutil_cmdline(pid: int) -> list[str]:
    import psutil

    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def test_dev_mode_only_when_the_prefix_cache_must_be_emptied():
    from harness.engines.vllm_server import VLLMServer

    loads = [{"kind": "concurrency", "concurrency": 1}]
    assert VLLMServer(loads=loads, enable_prefix_caching=False).dev_mode() is None
    assert "vLLM's default" in VLLMServer(loads=loads).dev_mode()
    assert "enable_prefix_caching: true" in VLLMServer(loads=loads, enable_prefix_caching=True).dev_mode()


def test_the_health_check_does_not_take_another_server_on_the_port_for_ours():
    """Something else answers on the chosen port (here: another OpenAI-like server with another model)."""
    from harness.engines.vllm_server import Server, wait_healthy

    class Other(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = json.dumps({"data": [{"id": "someone-elses-model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    port = other.server_address[1]
    try:
        server = Server(proc=ours, port=port, base_url=f"http://127.0.0.1:{port}", api_key="k",
                        served_name="harness-abc", dev_mode=False)
        with pytest.raises(TimeoutError, match="answered as another server .*someone-elses-model.*not as 'harness-abc'"):
            wait_healthy(ours, server, timeout_s=2)
        threading.Timer(1.0, ours.kill).start()  # our server dies (as vLLM does when the port is taken)
        with pytest.raises(RuntimeError, match="exited with code -9 before it was healthy.*another server"):
            wait_healthy(ours, server, timeout_s=30)
    finally:
        other.shutdown()
        other.server_close()
        ours.kill()
        ours.wait()


# a distributed cell -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_distributed_cell_listens_on_loopback_only(tmp_path):
    from datetime import timedelta

    from torch.distributed import TCPStore

    from harness.scenarios.training.launch import launch
    from tests.test_distributed import SETTINGS, make_cell

    before = _listening([os.getpid()])
    # what torch does by itself: a store given 127.0.0.1 still listens on every interface
    plain = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=30))
    ips = {ip for ip, port in _listening([os.getpid()]) if port == plain.port}
    assert ips and ips <= {"::", "0.0.0.0"}, ips
    del plain

    settings = SETTINGS.model_dump(mode="json") | {"warmup_steps": 0, "steps": 1}
    with _Watch() as watch:
        ranks = launch(make_cell({"kind": "ddp"}, settings, "lo"), tmp_path / "out", timeout_s=300)
    assert [r["rank"] for r in ranks] == [0, 1]
    by_pid = {}
    for (ip, _), pid in watch.seen.items():
        by_pid.setdefault(pid, set()).add(ip)
    assert {ip for ip, _ in watch.seen} == {"127.0.0.1"}, watch.seen
    assert os.getpid() in by_pid  # the launcher's store (torchrun hosts none)
    assert len(set(by_pid) - {os.getpid()}) >= 2  # gloo's listeners in both ranks
    assert _listening([os.getpid()]) == before  # the store closed with the cell


# escaping and redaction ---------------------------------------------------------------------------


def _record(env, **changes) -> Record:
    fields = dict(record_id="r1", suite="nightly", cell_id="c", cell_key="k", code_key="c", cell={"device": "cpu"},
                  status="ok", metrics={"ttft_ms": Metric(value=10.0, unit="ms")}, environment=env, seed=0,
                  started_at=datetime(2026, 11, 10, tzinfo=timezone.utc), duration_s=3.0,
                  command="harness run suites/nightly.yaml --only c")
    return Record(**(fields | changes))


def _repo(tmp_path: Path) -> str:
    from tests.test_asv import git, make_repo

    make_repo(tmp_path / "repo", 1)
    return git(tmp_path / "repo", "rev-parse", "HEAD")


def test_asv_code_is_html_escaped_and_unsafe_commits_and_names_are_refused(tmp_path):
    from harness.results.environment import capture
    from harness.track.asvconf import load_config
    from harness.track.asvdb import ingest
    from tests.test_asv import make_config

    sha = _repo(tmp_path)
    env = capture().model_copy(update={"git_sha": sha, "git_dirty": False})
    evil = "harness run 'a<script>alert(1)</script>.yaml' --only \"c\" && <img src=x onerror=alert(2)>"
    good = _record(env, command=evil)
    # set past validation (model_copy does not validate), as a hand-edited or older file might read
    bad_sha = _record(env, record_id="r2", cell_id="d").model_copy(
        update={"environment": env.model_copy(update={"git_sha": "HEAD; rm -rf ~"})})
    bad_name = _record(env, record_id="r3", cell_id="e", metrics={"../../x<b>": Metric(value=1.0, unit="ms")})
    report = ingest([good, bad_sha, bad_name], load_config(make_config(tmp_path, tmp_path / "repo")), "m")
    bench = json.loads((tmp_path / "asv" / "results" / "benchmarks.json").read_text())
    code = bench["nightly.c.ttft_ms"]["code"]
    assert "<" not in code and ">" not in code and '"' not in code
    assert html.unescape(code).endswith(evil)  # the text itself is kept
    assert [n.split(".")[1] for n in bench if n != "version"] == ["c"]
    assert any("'HEAD; rm -rf ~' is not a commit" in p for p in report.problems), report.problems
    assert any("nightly/e" in p and "metric names" in p for p in report.problems), report.problems
    assert [p.name for p in (tmp_path / "asv" / "results" / "m").iterdir() if p.name != "machine.json"] == [
        f"{sha[:8]}-harness-cpu.json"]


SKIP_SUITE = """
name: q
model: tiny
precisions: [fp32]
inference: {seq_len: 16, stride: 16, max_windows: 1, prompt_tokens: 4, decode_tokens: 2, repeats: 1}
"""


def test_the_reproduce_command_is_quoted_names_the_store_and_reruns_the_cell(tmp_path):
    """A suite and a ``local:`` model under folders with spaces; the model is missing, so the cell is
    recorded as skipped without running anything. Its reproduce command, run as the shell would split
    it, records the cell again (``--no-resume``) in the same store."""
    from harness.pipeline.planner import plan
    from harness.spec.suite import load_suite

    suite = tmp_path / "my suites" / "q.yaml"
    suite.parent.mkdir()
    suite.write_text(SKIP_SUITE)
    model = f"local:{tmp_path}/my models/none"
    p = plan(load_suite(suite, model=model), Host.detect(), source=str(suite), model_override=model)
    (pc,) = p.cells
    assert shlex.split(p.command(pc.cell, tmp_path / "the results")) == [
        "harness", "run", str(suite), "--only", pc.cell.id, "--model", model, "--results", str(tmp_path / "the results"),
        "--no-resume"]

    cli = [sys.executable, "-m", "harness.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250"}
    first = subprocess.run([*cli, "run", str(suite), "--model", model], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    (rec,) = Store(tmp_path / "results").records("q")
    assert rec.status == "skipped"
    argv = shlex.split(rec.command)
    assert argv[0] == "harness" and argv[argv.index("--model") + 1] == model and argv[-1] == "--no-resume"
    again = subprocess.run([*cli, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "recorded earlier" not in again.stdout
    assert [r.cell_id for r in Store(tmp_path / argv[argv.index("--results") + 1]).records("q")] == [pc.cell.id] * 2


def test_the_public_view_drops_hostname_home_folders_and_log_tails(tmp_path):
    from harness.results.environment import capture
    from harness.track.publish import REDACTED, main, redact

    env = capture().model_copy(update={"hostname": "gpu-box-7.corp.example", "git_sha": "a" * 40})
    rec = _record(
        env, status="error", cell={"device": "cpu", "model": {"kind": "local", "path": "/home/alice/models/m"}},
        reason="cell 'c': torchrun exited with status 1: rank 0 failed: OSError: /root/.cache/x: gone on gpu-box-7\n"
               "--- torchrun log (tail) ---\nsecret line from the log",
        log_tail="Traceback ... /home/alice/secret.py line 3\nHF_TOKEN=hf_xxx",
        info={"model_path": "/home/alice/.cache/llm-harness/m", "tmp": "/tmp/pytest-of-alice/pytest-1/x",
              "ratio": float("nan"), "note": "ran on gpu-box-7, not gpu-box-70"},
        metrics={"ttft_ms": Metric(value=float("inf"), unit="ms", samples=[1.0, 2.0])},
        command="harness run '/home/alice/my suites/n.yaml' --only c --model local:/root/m --results results --no-resume")
    pub = redact(rec)
    text = pub.model_dump_json()
    for private in ("alice", "gpu-box-7.corp", "/root", "/home/", "secret", "HF_TOKEN", "torchrun log"):
        assert private not in text, private
    assert pub.log_tail is None and pub.environment.hostname == REDACTED
    assert pub.reason == "cell 'c': torchrun exited with status 1: rank 0 failed: OSError: ~/.cache/x: gone on <host>"
    assert pub.cell["model"]["path"] == "~/models/m"
    assert pub.info["tmp"] == "/tmp/pytest-of-<user>/pytest-1/x" and pub.info["note"] == "ran on <host>, not gpu-box-70"
    assert pub.command == "harness run '~/my suites/n.yaml' --only c --model local:~/m --results results --no-resume"
    # what is not private is kept, odd floats included
    assert pub.metrics["ttft_ms"].value == float("inf") and pub.metrics["ttft_ms"].samples == [1.0, 2.0]
    assert pub.info["ratio"] != pub.info["ratio"]  # NaN
    assert (pub.environment.cpu_model, pub.environment.git_sha, pub.environment.packages) == (
        env.cpu_model, env.git_sha, env.packages)

    # the nightly's step: a store in, its public view out; the report and asv then read that
    Store(tmp_path / "raw").append(rec)
    assert main([str(tmp_path / "raw"), "--out", str(tmp_path / "new")]) == 0
    (back,) = Store(tmp_path / "new").records()
    assert back.model_dump_json() == pub.model_dump_json()
    assert "alice" not in (tmp_path / "new" / "nightly.jsonl").read_text()
    assert main([str(tmp_path / "raw"), "--out", str(tmp_path / "new")]) == 2  # never duplicates a public view


def test_the_nightly_publishes_only_the_public_view():
    import yaml

    wf = yaml.safe_load((REPO / ".github" / "workflows" / "nightly.yml").read_text())
    steps = wf["jobs"]["publish"]["steps"]
    download = next(i for i, s in enumerate(steps) if "download-artifact" in s.get("uses", ""))
    view = next(i for i, s in enumerate(steps) if "harness publish raw --out new" in s.get("run", ""))
    readers = [i for i, s in enumerate(steps)
               if "harness asv new" in s.get("run", "") or "harness report new" in s.get("run", "")]
    assert steps[download]["with"]["path"] == "raw"  # the full records never land where the site is built from
    assert download < view < min(readers) and len(readers) == 2
    assert not any(" raw" in s.get("run", "") for s in steps[view + 1:])
