"""The asv site offline: `harness asv-publish` puts asv's JavaScript and CSS (from npm, see
harness/track/asvsite.py) beside the pages, and the site then draws its graphs and its regressions page
in a real headless Chromium that reaches nothing but 127.0.0.1. The fast tests rewrite asv's own
index.html against stand-in assets; the slow one publishes a real site from records with an injected
latency regression."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.base.errors import HarnessError
from harness.results.store import Store
from harness.track.asvdb import regressions
from harness.track.asvsite import (
    ASSETS,
    MANIFEST,
    Entry,
    Manifest,
    default_assets_dir,
    ensure_assets,
    fetch_assets,
    make_self_contained,
    nearest_version,
    read_manifest,
)
from tests.browser import browser, screenshot, serve
from tests.test_asv import make_config, make_repo, metrics, record

ASV_WWW = Path(__import__("asv").__file__).parent / "www"
# the cache `harness asv-assets` filled (tox -e tests does, before the tests), read before conftest's
# session fixture points HARNESS_CACHE_DIR at a private folder
CACHED_ASSETS = default_assets_dir()
EXTERNAL_LOAD = re.compile(r"<(?:script|link)\b[^>]*(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE)


def fake_assets(folder: Path) -> Path:
    """A complete assets folder whose files are stand-ins (no network): one small file per ASSETS entry."""
    folder.mkdir()
    entries = []
    for a in ASSETS:
        local = f"{a.package}-{a.version}--{Path(a.file).name}"
        data = f"/* stand-in for {a.url} */\n".encode()
        (folder / local).write_bytes(data)
        (folder / f"{a.package}-LICENSE").write_text("MIT\n")
        entries.append(Entry(url=a.url, package=a.package, version_asked=a.version, version=a.version,
                             cdn_file=a.url.rsplit("/", 1)[-1], file=a.file, local=local,
                             sha256=hashlib.sha256(data).hexdigest(), licence_file=f"{a.package}-LICENSE",
                             licence="MIT", tarball_integrity=""))
    (folder / MANIFEST).write_text(Manifest(entries=entries).model_dump_json())
    return folder


def fake_site(folder: Path) -> Path:
    """What `asv publish` copies from its templates: asv's own index.html and error.html, and a page in
    a sub-folder that loads jQuery from the CDN too."""
    folder.mkdir()
    for name in ("index.html", "error.html", "asv.css"):
        shutil.copyfile(ASV_WWW / name, folder / name)
    (folder / "sub").mkdir()
    (folder / "sub" / "page.html").write_text(
        "<html><head><script src='https://code.jquery.com/jquery-3.3.1.min.js' crossorigin></script></head></html>")
    return folder


def test_every_cdn_reference_of_asvs_pages_is_rewritten_to_a_local_file(tmp_path):
    assets, site = fake_assets(tmp_path / "assets"), fake_site(tmp_path / "html")
    assert len(EXTERNAL_LOAD.findall((site / "index.html").read_text())) == len(ASSETS)  # asv 0.6.6's CDN list
    done = make_self_contained(site, assets)
    assert done.replaced == len(ASSETS) + 1 and sorted(done.pages) == [site / "index.html", site / "sub" / "page.html"]
    index = (site / "index.html").read_text()
    assert not EXTERNAL_LOAD.search(index) and not EXTERNAL_LOAD.search((site / "sub" / "page.html").read_text())
    assert "crossorigin" not in index and "referrerpolicy" not in index
    tags = re.findall(r"<(?:script|link)\b[^>]*vendor/[^>]*>", index)
    assert len(tags) == len(ASSETS)
    for tag in tags:
        local = re.search(r"(?:src|href)=\"vendor/([^\"]+)\"", tag)[1]
        sri = re.search(r"integrity=\"sha384-([^\"]+)\"", tag)[1]
        assert base64.b64decode(sri) == hashlib.sha384((site / "vendor" / local).read_bytes()).digest()
        assert "onerror" in tag or "stylesheet" in tag  # asv's fallback to error.html is kept
    assert 'src="../vendor/jquery-3.3.1--jquery.min.js"' in (site / "sub" / "page.html").read_text()
    assert (site / "vendor" / MANIFEST).is_file() and (site / "vendor" / "bootstrap-LICENSE").is_file()
    # the local scripts and the rest of the page are untouched
    assert 'src="graphdisplay.js"' in index and 'href="https://github.com/airspeed-velocity/asv/"' in index
    # a second run changes nothing
    before = {p: p.read_bytes() for p in site.rglob("*.html")}
    assert make_self_contained(site, assets).replaced == 0
    assert {p: p.read_bytes() for p in site.rglob("*.html")} == before


@pytest.mark.parametrize("tag", ['<script src="https://example.org/x.js"></script>',
                                 "<link href='//cdn.example.org/x.css' rel='stylesheet'>",
                                 '<link rel="preload" as="script" href="http://example.org/y.js">'])
def test_a_script_or_stylesheet_left_on_another_host_is_refused(tmp_path, tag):
    assets, site = fake_assets(tmp_path / "assets"), fake_site(tmp_path / "html")
    page = site / "extra.html"
    page.write_text(f"<html><head>\n<link rel='alternate' href='https://example.org/feed.xml'>\n{tag}\n</head></html>")
    with pytest.raises(HarnessError, match=r"extra.html:3: loads .*example.org/.*ASSETS in harness/track/asvsite.py"):
        make_self_contained(site, assets)


def test_a_css_import_from_another_host_is_refused(tmp_path):
    assets, site = fake_assets(tmp_path / "assets"), fake_site(tmp_path / "html")
    (site / "extra.css").write_text('@import url("https://fonts.example.org/f.css");')
    with pytest.raises(HarnessError, match="extra.css: imports https://fonts.example.org/f.css"):
        make_self_contained(site, assets)


def test_incomplete_assets_change_nothing_and_say_what_to_do(tmp_path, monkeypatch):
    assets, site = fake_assets(tmp_path / "assets"), fake_site(tmp_path / "html")
    before = (site / "index.html").read_bytes()
    assert read_manifest(assets) is not None
    next(assets.glob("jquery-*--jquery.min.js")).write_text("tampered")
    assert read_manifest(assets) is None
    with pytest.raises(HarnessError, match="assets are incomplete.*harness asv-assets"):
        make_self_contained(site, assets)
    assert (site / "index.html").read_bytes() == before and not (site / "vendor").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no npm
    with pytest.raises(HarnessError, match="npm is not installed.*harness asv-assets` where the npm registry is reachable"):
        ensure_assets(assets)


def test_a_missing_version_is_replaced_by_the_nearest_of_its_major():
    assert nearest_version("1.0.1", ["1.1.3"]) == "1.1.3"  # npm's stupid-table-plugin
    assert nearest_version("3.3.1", ["3.2.1", "3.3.1", "3.4.0"]) == "3.3.1"
    assert nearest_version("1.2.0", ["1.1.0", "1.3.0", "1.2.5-rc.1"]) == "1.3.0"  # a tie: the later one
    assert nearest_version("1.2.0", ["1.2.4", "1.2.9", "1.5.0"]) == "1.2.4"
    assert nearest_version("2.0.0", ["1.1.3", "3.0.0"]) is None


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """The real assets: the cache `harness asv-assets` filled, else fetched now (npm and its registry),
    else the test is skipped with the reason."""
    if read_manifest(CACHED_ASSETS) is not None:
        return CACHED_ASSETS
    if shutil.which("npm") is None:
        pytest.skip(f"no asv assets in {CACHED_ASSETS} and no npm: run `harness asv-assets` where the npm registry is reachable")
    folder = tmp_path_factory.mktemp("asv-assets")
    try:
        fetch_assets(folder)
    except HarnessError as exc:
        pytest.skip(f"no asv assets in {CACHED_ASSETS} and npm could not fetch them: {exc}")
    return folder


GRAPH = "nightly.drops.ttft_ms"
PLOT_READY = ("var p = window.jQuery && jQuery('#main-graph').data('plot');"
              "return p ? p.getData().map(function (s) { return s.data; }) : null;")
REGRESSION_ROWS = ("return window.jQuery ? jQuery('#regressions-body table:visible tbody tr').get().map(function (tr) "
                   "{ return jQuery(tr).children('td').get().map(function (td) { return jQuery(td).text(); }); }) : [];")


@pytest.mark.slow
def test_the_published_site_works_offline_in_a_browser(tmp_path, assets):
    """Five nights on five commits; cell `drops`' time to first token goes up 30 % at the fourth."""
    from harness.results.environment import capture

    # the files npm gave are the ones the CDNs serve, byte for byte, except where the manifest says not
    page = (ASV_WWW / "index.html").read_text()
    for e in Manifest.model_validate_json((assets / MANIFEST).read_text()).entries:
        algo, digest = re.search(rf'"{re.escape(e.url)}" integrity="(sha\d+)-([^"]+)"', page).groups()
        same = base64.b64decode(digest) == hashlib.new(algo, (assets / e.local).read_bytes()).digest()
        assert same == (e.substitution is None), (e.url, e.substitution)
    env = capture()
    shas = make_repo(tmp_path / "repo", 5)
    config = make_config(tmp_path, tmp_path / "repo")
    store = Store(tmp_path / "records")
    jitter = [1.0, 1.006, 0.995, 1.004, 0.997]
    for night, sha in enumerate(shas):
        j = jitter[night]
        store.append(record(env, sha, "drops", metrics(200.0 * j, 0.30, 150.0 * j * (1.3 if night >= 3 else 1.0)), night))
        store.append(record(env, sha, "steady", metrics(200.0 * j, 0.30, 150.0 * j), night))
    cli = [sys.executable, "-m", "harness.cli"]
    res = subprocess.run([*cli, "asv", str(tmp_path / "records"), "--machine", "cpu-ci", "--config", str(config)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([*cli, "asv-publish", "--config", str(config), "--assets", str(assets)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "COLUMNS": "250"})
    assert res.returncode == 0, res.stdout + res.stderr
    html = tmp_path / "asv" / "html"
    assert f"{len(ASSETS)} CDN references -> {html / 'vendor'}" in res.stdout, res.stdout
    assert [r["benchmark"] for r in regressions(html)] == [GRAPH]
    licences = {e["licence_file"] for e in json.loads((html / "vendor" / MANIFEST).read_text())["entries"]}
    assert all((html / "vendor" / name).is_file() for name in licences)

    from selenium.webdriver.support.ui import WebDriverWait

    with serve(html) as base, browser(1400, 1060) as session:
        session.get(f"{base}index.html#{GRAPH}?machine=cpu-ci&device=cpu")
        series = WebDriverWait(session, 30).until(lambda d: d.execute_script(PLOT_READY))
        body = session.find_element("tag name", "body").text
        assert "failed to load" not in body and session.current_url.startswith(f"{base}index.html")
        [points] = series  # one graph line: machine cpu-ci, device cpu
        values = [y for _x, y in points]
        assert len(values) == 5 and values[3] / values[2] == pytest.approx(1.3 * 1.004 / 0.995, rel=1e-6)
        assert GRAPH in session.find_element("id", "title").text
        screenshot(session, "asv-graph", tmp_path)

        session.set_window_size(1400, 420)  # the table of one regression, without a page of white below
        session.get(f"{base}index.html#regressions")
        rows = WebDriverWait(session, 30).until(lambda d: d.execute_script(REGRESSION_ROWS))
        # one row: the series, the commit of the step, the factor, before and after (150 ms -> 195 ms)
        [(name, _date, commit, factor, before, after, _ignore)] = rows
        assert (name, commit, factor, before, after) == (GRAPH, shas[3][:8], "1.30x", "150 ms", "195 ms"), rows
        screenshot(session, "asv-regressions", tmp_path)

        hosts = session.execute_script("return performance.getEntriesByType('resource').map(function (e) "
                                       "{ return e.name; });")
        assert hosts and all(name.startswith(base) for name in hosts), [n for n in hosts if not n.startswith(base)]
        assert any("/vendor/flot-0.8.3--jquery.flot.js" in n for n in hosts)
