"""asv's configuration as the export relies on it: reading ``asv.conf.json`` strictly (asv itself ignores
misspelled keys), and asv's own rules for which series its regressions page judges and with which
threshold (``re.match`` of each pattern against ``name@branch``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

from harness.base.errors import HarnessError
from harness.base.registry import suggest

# asv 0.6.6's configuration keys (asv.config.Config's attributes plus `version` and `build_cache_size`);
# a test checks this list against the installed asv.
ASV_CONFIG_KEYS = frozenset({
    "version", "project", "project_url", "repo", "repo_subdir", "branches", "pythons", "matrix", "exclude",
    "include", "env_dir", "benchmark_dir", "results_dir", "html_dir", "show_commit_url", "hash_length",
    "environment_type", "install_timeout", "default_benchmark_timeout", "dvcs", "regressions_first_commits",
    "regressions_thresholds", "plugins", "conda_channels", "conda_environment_file", "build_command",
    "install_command", "uninstall_command", "launch_method", "build_cache_size",
})


class AsvConfig(BaseModel):
    """The parts of ``asv.conf.json`` this module relies on; paths resolved as asv does, against the
    configuration file's folder (asv changes into it before anything else)."""

    path: Path
    repo: Path
    branches: list[str]
    results_dir: Path
    html_dir: Path
    first_commits: dict[str, str | None]
    thresholds: dict[str, float]


def load_config(path: str | Path) -> AsvConfig:
    """Read ``asv.conf.json``, refusing keys asv does not know (it would ignore them silently)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"{p}: no such asv configuration") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{p}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    unknown = sorted(set(raw) - ASV_CONFIG_KEYS)
    if unknown:
        raise HarnessError("; ".join(f"{p}: unknown asv configuration key {k!r}{suggest(k, ASV_CONFIG_KEYS)}"
                                     " (asv would ignore it silently)" for k in unknown))
    for key in ("repo", "branches", "results_dir", "html_dir"):
        if key not in raw:
            raise HarnessError(f"{p}: missing {key!r}")
    base = p.resolve().parent
    return AsvConfig(path=p, repo=base / raw["repo"], branches=list(raw["branches"]), results_dir=base / raw["results_dir"],
                     html_dir=base / raw["html_dir"], first_commits=raw.get("regressions_first_commits", {}),
                     thresholds={k: float(v) for k, v in raw.get("regressions_thresholds", {}).items()})


def detection_on(config: AsvConfig, name: str) -> bool:
    """Whether asv's regressions page would run detection on benchmark ``name`` on every configured
    branch (asv's own rule: ``re.match`` of each ``regressions_first_commits`` pattern against
    ``name@branch``; ``null`` turns it off)."""
    return not any(start is None and re.match(rx, f"{name}@{b}") for b in config.branches
                   for rx, start in config.first_commits.items())


def threshold_of(config: AsvConfig, name: str, branch: str) -> float:
    """The relative step asv's regressions page needs on ``name`` (asv's rule: the largest of the
    ``regressions_thresholds`` whose pattern ``re.match``-es ``name@branch``, else 0.05). Patterns that
    end in ``$`` never match: the branch suffix follows the name."""
    matched = [t for rx, t in config.thresholds.items() if re.match(rx, f"{name}@{branch}")]
    return max(matched) if matched else 0.05
