"""``harness asv-assets`` (asv's JavaScript and CSS from npm, once, where the registry is reachable) and
``harness asv-publish`` (``asv publish`` made self-contained: the site works offline); beside
``harness asv``, which writes the records into asv's results database. See
:mod:`harness.track.asvsite`."""

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

