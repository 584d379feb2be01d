"""``harness asv`` (records into asv's results database, each under its machine: :mod:`harness.track.asvdb`),
``harness asv-assets`` (asv's JavaScript and CSS from npm, once, where the registry is reachable) and
``harness asv-publish`` (``asv publish`` made self-contained: the site works offline:
:mod:`harness.track.asvsite`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.cli import app, err, out

AssetsOpt = typer.Option(None, "--assets", help="Folder of the site's assets (default $HARNESS_CACHE_DIR/asv-assets).")


@app.command("asv-assets")
def asv_assets(dest: Optional[Path] = AssetsOpt) -> None:
    """Fetch the JavaScript and CSS asv's pages load from CDNs (from their npm packages, with their
    licences and a manifest); nothing is fetched when the folder is complete. Exit 0, 2 when npm or
    the registry is not there."""
    from harness.base.errors import HarnessError
    from harness.track.asvsite import default_assets_dir, fetch_assets

    folder = dest or default_assets_dir()
    try:
        manifest, fetched = fetch_assets(folder)
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    for e in manifest.entries:
        if e.substitution:
            out.print(f"{e.url}: {e.substitution}", highlight=False, soft_wrap=True)
    packages = sorted({f"{e.package}@{e.version}" for e in manifest.entries})
    out.print(f"{'fetched' if fetched else 'already complete'}: {len(manifest.entries)} files of {', '.join(packages)} "
              f"in {folder}", highlight=False, soft_wrap=True)


@app.command("asv-publish")
def asv_publish(config: Path = typer.Option(Path("benchmarks/asv.conf.json"), "--config",
                                            help="asv configuration (run from the repository root)."),
                assets: Optional[Path] = AssetsOpt) -> None:
    """`asv publish`, then the site made self-contained (its scripts and stylesheets under
    html/vendor/, no CDN), so it works offline. Exit 0, 2 on bad input or missing assets."""
    from harness.base.errors import HarnessError
    from harness.track.asvsite import publish_site

    try:
        site = publish_site(config, assets)
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    out.print(f"{site.html_dir}: {site.replaced} CDN references -> {site.vendor} (works offline; "
              f"`asv --config {config} preview` serves it)", highlight=False, soft_wrap=True)


@app.command("asv")
def asv_ingest(results: list[Path] = typer.Argument(..., help="Store folders or .jsonl files of records."),
               machine: Optional[str] = typer.Option(None, "--machine", help="File the records under this logical runner name "
                                                     "(records of one machine only); default: each record's own machine."),
               config: Path = typer.Option(Path("benchmarks/asv.conf.json"), "--config", help="asv configuration (run from the repository root)."),
               ) -> None:
    """Write records into asv's results database; then `harness asv-publish` (or `asv --config
    benchmarks/asv.conf.json publish`, whose site needs the CDNs).
    Exit 0 when written, 2 on bad input (configuration, paths, records that have no commit)."""
    from harness.base.errors import HarnessError
    from harness.results.store import read_records
    from harness.track.asvconf import load_config
    from harness.track.asvdb import ingest

    from harness.results.machine import machine_of

    try:
        conf = load_config(config)
        records = [r for p in results for r in read_records(p)]
        by_machine: dict[str, list] = {}
        for r in records:
            by_machine.setdefault(machine_of(r), []).append(r)
        if machine is not None:
            if len(by_machine) > 1:
                raise HarnessError(f"--machine {machine}: the records come from {len(by_machine)} machines "
                                   f"({', '.join(sorted(by_machine))}); leave --machine out to file each under its own")
            by_machine = {machine: records}
        reports = [(m, ingest(rs, conf, m)) for m, rs in sorted(by_machine.items())]
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if not reports:
        out.print("0 records: nothing written", highlight=False)
    problems = False
    for name, report in reports:
        problems |= _print_ingest(report, conf, name)
    raise typer.Exit(2 if problems else 0)


def _print_ingest(report, conf, machine: str) -> bool:
    """Print one machine's ingest report; True when something was not written."""
    for line in report.warnings:
        err.print(f"[yellow]warning[/yellow] {line}", highlight=False, soft_wrap=True)
    for line in report.problems:
        err.print(f"[red]not written[/red] {line}", highlight=False, soft_wrap=True)
    if report.invalid:
        err.print(f"[yellow]skipped {len(report.invalid)} invalid record(s)[/yellow] (not trusted, kept out of asv):",
                  highlight=False)
        for line in report.invalid:
            err.print(f"  {line}", highlight=False, soft_wrap=True)
    out.print(f"{report.records} records -> {report.series} asv series in {len(report.files)} result file(s) under "
              f"{conf.results_dir}/{machine}", highlight=False)
    return bool(report.problems)
