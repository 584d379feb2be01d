"""The asv site without the network: asv's JavaScript and CSS beside the published pages.

asv 0.6.6's ``index.html`` (the only page of its site that loads anything: the graphs, the benchmark
list and the regressions page are views of it; ``error.html`` loads nothing) takes jQuery, flot,
flot-orderbars, stupidtable, blueimp-md5 and bootstrap from public CDNs; offline (an air-gapped
cluster, a closed CI) it only says "One or more external (JavaScript) dependencies of airspeed
velocity failed to load". Here:

- :func:`fetch_assets` takes the files those pages ask for (:data:`ASSETS`) from their npm packages
  (``npm pack``, the one network step, at install time), with each package's licence, into a folder
  with a ``manifest.json`` (package, version asked and used, file, sha256, licence);
- :func:`make_self_contained` copies them under ``<html_dir>/vendor/`` and points every page at them
  (a sha384 ``integrity`` of the local file; no ``crossorigin``/``referrerpolicy``), then fails if any
  page still loads a script or stylesheet from another host. It never needs the network;
- :func:`publish_site` is ``asv publish`` followed by that (``harness asv-publish``).

Substitutions, recorded in the manifest as ``version_asked`` / ``version`` and ``cdn_file`` / ``file``:

- stupidtable: the page asks for cdnjs's ``stupidtable/1.0.1/stupidtable.min.js``; npm's package
  ``stupid-table-plugin`` has only 1.1.3, so 1.1.3 is used (the rule for any version npm lacks: the
  nearest release of the same major version, see :func:`nearest_version`);
- flot 0.8.3: npm's package has no minified files, so ``jquery.flot.js``, ``jquery.flot.time.js``,
  ``jquery.flot.selection.js`` and ``jquery.flot.categories.js`` replace the ``.min.js`` files;
- flot-orderbars 1.0.0 carries no licence file: its ``package.json`` (``"license": "MIT"``) is kept
  as its licence record.

The others are the very files the CDNs serve (their sha256/sha512 equal the page's ``integrity``).
bootstrap's glyphicon fonts are not taken: no asv page uses a glyphicon.

The folder is flat (``<package>-<version>--<file name>``), so the default one,
``$HARNESS_CACHE_DIR/asv-assets``, holds no sub-folder that ``harness cache --prune`` would evict.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field, ValidationError

from harness.base.errors import HarnessError
from harness.base.paths import cache_dir
from harness.track.asvconf import load_config

ASV_VERSION = "0.6.6"  # the asv whose pages ASSETS describes (the `track` extra pins it)
MANIFEST = "manifest.json"
VENDOR = "vendor"
NPM_TIMEOUT_S = 300
ASSETS_HINT = ("run `harness asv-assets` where the npm registry is reachable (tox -e tests does), "
               "or copy a complete asv-assets folder here and give it with --assets")


class Asset(BaseModel, frozen=True):
    """One CDN reference of asv's pages and the npm file that replaces it."""

    url: str = Field(description="the address in asv's index.html")
    package: str = Field(description="the npm package")
    version: str = Field(description="the version the page asks for")
    file: str = Field(description="the file inside the npm package (below its `package/` folder)")


_CDNJS = "https://cdnjs.cloudflare.com/ajax/libs"
_JSDELIVR = "https://cdn.jsdelivr.net/npm"
ASSETS: tuple[Asset, ...] = (
    Asset(url="https://code.jquery.com/jquery-3.3.1.min.js", package="jquery", version="3.3.1", file="dist/jquery.min.js"),
    Asset(url=f"{_CDNJS}/flot/0.8.3/jquery.flot.min.js", package="flot", version="0.8.3", file="jquery.flot.js"),
    Asset(url=f"{_CDNJS}/flot/0.8.3/jquery.flot.time.min.js", package="flot", version="0.8.3", file="jquery.flot.time.js"),
    Asset(url=f"{_CDNJS}/flot/0.8.3/jquery.flot.selection.min.js", package="flot", version="0.8.3",
          file="jquery.flot.selection.js"),
    Asset(url=f"{_CDNJS}/flot/0.8.3/jquery.flot.categories.min.js", package="flot", version="0.8.3",
          file="jquery.flot.categories.js"),
    Asset(url=f"{_JSDELIVR}/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js", package="flot-orderbars", version="1.0.0",
          file="js/jquery.flot.orderBars.js"),
    Asset(url=f"{_CDNJS}/stupidtable/1.0.1/stupidtable.min.js", package="stupid-table-plugin", version="1.0.1",
          file="stupidtable.min.js"),
    Asset(url=f"{_CDNJS}/blueimp-md5/2.19.0/js/md5.min.js", package="blueimp-md5", version="2.19.0", file="js/md5.min.js"),
    Asset(url=f"{_JSDELIVR}/bootstrap@3.1.1/dist/js/bootstrap.min.js", package="bootstrap", version="3.1.1",
          file="dist/js/bootstrap.min.js"),
    Asset(url=f"{_JSDELIVR}/bootstrap@3.1.1/dist/css/bootstrap.min.css", package="bootstrap", version="3.1.1",
          file="dist/css/bootstrap.min.css"),
)


class Entry(BaseModel):
    """One file of the folder: where it came from and what it is."""

    url: str
    package: str
    version_asked: str
    version: str = Field(description="the version taken (differs from version_asked where npm lacks it)")
    cdn_file: str = Field(description="the file name the page asks for")
    file: str = Field(description="the file taken from the npm package")
    local: str = Field(description="its name in the folder")
    sha256: str
    licence_file: str = Field(description="the package's licence file, in the folder")
    licence: str = Field(description="the licence package.json declares, or 'see licence_file'")
    tarball_integrity: str = Field(description="npm's integrity of the package tarball")
    substitution: str | None = Field(default=None, description="how it differs from what the page asks for")


class Manifest(BaseModel):
    """``manifest.json`` of an assets folder (and of ``<html_dir>/vendor/``): one entry per CDN reference."""

    asv: str = ASV_VERSION
    entries: list[Entry]


def default_assets_dir() -> Path:
    """``$HARNESS_CACHE_DIR/asv-assets`` (the cache root made on demand, this folder not)."""
    return cache_dir() / "asv-assets"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest when it is complete (every :data:`ASSETS` entry present, every file and
    licence there with its sha256), else None."""
    try:
        manifest = Manifest.model_validate_json((folder / MANIFEST).read_text())
    except (OSError, ValidationError):
        return None
    by_url = {e.url: e for e in manifest.entries}
    for a in ASSETS:
        e = by_url.get(a.url)
        if e is None or (e.package, e.version_asked, e.file) != (a.package, a.version, a.file):
            return None
        try:
            if _sha256(folder / e.local) != e.sha256 or not (folder / e.licence_file).is_file():
                return None
        except OSError:
            return None
    return manifest


def _version_key(v: str) -> tuple[int, int, int] | None:
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", v)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def nearest_version(asked: str, available: list[str]) -> str | None:
    """``asked`` if available, else the nearest release of the same major version (closest minor, then
    closest patch; the later one on a tie); None when there is none (another major is no substitute)."""
    if asked in available:
        return asked
    want = _version_key(asked)
    if want is None:
        return None
    same = [(k, v) for v in available if (k := _version_key(v)) is not None and k[0] == want[0]]
    if not same:
        return None
    return min(same, key=lambda kv: (abs(kv[0][1] - want[1]), abs(kv[0][2] - want[2]), tuple(-x for x in kv[0])))[1]


def _npm(npm: str, args: list[str], cwd: Path) -> str:
    cmd = [npm, *args, "--json", "--prefer-offline", "--loglevel=error"]
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"`{' '.join(cmd)}` took over {NPM_TIMEOUT_S} s; is the npm registry reachable?") from None
    if res.returncode != 0:
        try:
            why = "{code}: {summary}".format(**json.loads(res.stdout)["error"])
        except (ValueError, KeyError, TypeError):
            why = " | ".join((res.stderr or res.stdout).strip().splitlines()[-4:])
        raise HarnessError(f"`{' '.join(cmd)}` failed (exit {res.returncode}): {why}; the asv site's assets come from "
                           "the npm registry, which must be reachable for this step")
    return res.stdout


def _licence(tar: tarfile.TarFile) -> tuple[str, str]:
    """(member name of the package's licence file, or of package.json where it has none; declared licence)."""
    names = sorted(tar.getnames())
    files = [n for n in names if re.fullmatch(r"package/(licen[cs]e|copying)(\.(txt|md))?", n, re.IGNORECASE)]
    declared = json.loads(tar.extractfile("package/package.json").read()).get("license")  # type: ignore[union-attr]
    if isinstance(declared, dict):
        declared = declared.get("type")
    if not isinstance(declared, str) and files:
        text = tar.extractfile(files[0]).read().decode("utf-8", "replace")  # type: ignore[union-attr]
        declared = "MIT (by its text)" if "Permission is hereby granted, free of charge" in text else None
    return (files[0] if files else "package/package.json"), (declared if isinstance(declared, str) else "see licence_file")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _fetch_package(npm: str, package: str, asked: str, wanted: list[Asset], dest: Path, tmp: Path) -> list[Entry]:
    available = json.loads(_npm(npm, ["view", package, "versions"], tmp) or "[]")
    available = [available] if isinstance(available, str) else available
    version = nearest_version(asked, available)
    if version is None:
        raise HarnessError(f"npm package {package}: no version {asked} and no other {asked.split('.')[0]}.x "
                           f"(it has {available[-5:]}); update ASSETS in harness/track/asvsite.py")
    [packed] = json.loads(_npm(npm, ["pack", f"{package}@{version}", "--pack-destination", str(tmp)], tmp))
    with tarfile.open(tmp / packed["filename"], "r:gz") as tar:
        licence_member, declared = _licence(tar)
        licence_local = f"{package}-{version}--{PurePosixPath(licence_member).name}"
        _write(dest / licence_local, tar.extractfile(licence_member).read())  # type: ignore[union-attr]
        out = []
        for a in wanted:
            try:
                data = tar.extractfile(f"package/{a.file}").read()  # type: ignore[union-attr]
            except KeyError:
                raise HarnessError(f"npm package {package}@{version} has no {a.file} (for {a.url}); "
                                   "update ASSETS in harness/track/asvsite.py") from None
            local = f"{package}-{version}--{PurePosixPath(a.file).name}"
            cdn_file = a.url.rsplit("/", 1)[-1]
            notes = [f"npm has no {package} {asked}: {version} used"] if version != asked else []
            if ".min." in cdn_file and ".min." not in a.file:
                notes.append(f"npm's package has no minified file: {PurePosixPath(a.file).name} for {cdn_file}")
            _write(dest / local, data)
            out.append(Entry(url=a.url, package=package, version_asked=asked, version=version,
                             cdn_file=cdn_file, file=a.file, local=local, sha256=hashlib.sha256(data).hexdigest(),
                             licence_file=licence_local, licence=declared, tarball_integrity=packed.get("integrity", ""),
                             substitution="; ".join(notes) or None))
    return out


def fetch_assets(dest: Path | None = None) -> tuple[Manifest, bool]:
    """Ensure ``dest`` (default :func:`default_assets_dir`) holds every :data:`ASSETS` file, its
    licence and a complete manifest; returns ``(manifest, fetched)``. A complete manifest means
    nothing is fetched (no network). Otherwise each package is taken with ``npm pack`` (npm's cache
    first), its files unpacked; the manifest is written last, so an interrupted fetch is redone.
    Raises HarnessError when npm is missing, the registry unreachable, or a version or file absent."""
    dest = Path(dest) if dest is not None else default_assets_dir()
    manifest = read_manifest(dest)
    if manifest is not None:
        return manifest, False
    npm = shutil.which("npm")
    if npm is None:
        raise HarnessError(f"{dest}: the asv site's assets are missing and npm is not installed (Debian: apt-get "
                           "install npm; .ci/system-deps does); " + ASSETS_HINT)
    dest.mkdir(parents=True, exist_ok=True)
    packages: dict[tuple[str, str], list[Asset]] = {}
    for a in ASSETS:
        packages.setdefault((a.package, a.version), []).append(a)
    entries: list[Entry] = []
    with tempfile.TemporaryDirectory(prefix="asv-assets-") as tmp:
        for (package, asked), wanted in packages.items():
            entries += _fetch_package(npm, package, asked, wanted, dest, Path(tmp))
    manifest = Manifest(entries=entries)
    _write(dest / MANIFEST, (manifest.model_dump_json(indent=1) + "\n").encode())
    return manifest, True


def ensure_assets(dest: Path | None = None) -> Path:
    """``dest`` (default :func:`default_assets_dir`) with complete assets: as it is, or fetched when npm
    is installed. Raises HarnessError saying what to do when they are missing and npm is not there."""
    dest = Path(dest) if dest is not None else default_assets_dir()
    if read_manifest(dest) is None and shutil.which("npm") is None:
        raise HarnessError(f"{dest}: the asv site's JavaScript and CSS are not there (no complete {MANIFEST}) and npm "
                           "is not installed; " + ASSETS_HINT)
    fetch_assets(dest)
    return dest


# `<script ...>` and `<link ...>` start tags; an attribute `name="value"` (or 'value', or bare value) in one
_TAG = re.compile(r"<(script|link)\b[^>]*>", re.IGNORECASE)
_ATTR = r"""\s+{name}\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)"""
_EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)  # http(s)://, //host, any scheme://
_LOADED_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "manifest", "import"}
_CSS_EXTERNAL = re.compile(r"""(?:@import\s+|url\(\s*)["']?\s*((?:https?:)?//[^"')\s;]+)""", re.IGNORECASE)


def _attr(tag: str, name: str) -> str | None:
    m = re.search(_ATTR.format(name=name), tag, re.IGNORECASE)
    return m.group(1).strip("\"'") if m else None


def _rewrite_tag(tag: str, local: str, sri: str) -> str:
    for name in ("integrity", "crossorigin", "referrerpolicy"):
        tag = re.sub(_ATTR.format(name=name) + "|" + rf"\s+{name}(?=[\s/>])", "", tag, flags=re.IGNORECASE)
    attr = "src" if tag[1:].lower().startswith("script") else "href"
    return re.sub(_ATTR.format(name=attr), lambda m: f' {attr}="{local}" integrity="{sri}"', tag, count=1,
                  flags=re.IGNORECASE)


def _loads_external(tag: str) -> str | None:
    """The external address ``tag`` loads a script or a resource from, or None."""
    if tag[1:].lower().startswith("script"):
        src = _attr(tag, "src")
        return src if src and _EXTERNAL.match(src) else None
    href, rel = _attr(tag, "href"), (_attr(tag, "rel") or "").lower().split()
    return href if href and _EXTERNAL.match(href) and _LOADED_RELS & set(rel) else None


def _sri(path: Path) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode()


def _rewrite_page(text: str, links: dict[str, tuple[str, str]], prefix: str) -> tuple[str, int]:
    """``text`` with each ``<script src>`` / ``<link href>`` that ``links`` maps (url -> (local name, its
    sha384 integrity)) pointing at ``<prefix>/<local name>``; and how many were rewritten."""
    count = 0

    def swap(m: re.Match[str]) -> str:
        nonlocal count
        tag = m.group(0)
        found = links.get(_attr(tag, "src" if m.group(1).lower() == "script" else "href") or "")
        if found is None:
            return tag
        count += 1
        return _rewrite_tag(tag, f"{prefix}/{found[0]}", found[1])

    return _TAG.sub(swap, text), count


class SelfContained(BaseModel):
    """What :func:`make_self_contained` did."""

    html_dir: Path
    pages: list[Path] = Field(description="pages rewritten")
    replaced: int = Field(description="CDN references replaced by local files")
    vendor: Path


def make_self_contained(html_dir: Path, assets: Path | None = None) -> SelfContained:
    """Copy the assets of ``assets`` (default :func:`default_assets_dir`; see :func:`fetch_assets`)
    with their licences and manifest to ``<html_dir>/vendor/`` and rewrite every ``*.html`` page's CDN
    ``<script src>`` and ``<link href>`` to them. Raises HarnessError when the assets are incomplete
    (nothing changed), and, after rewriting, when any page still loads a script or stylesheet (or a
    preload, icon...) from another host, or a CSS file there imports one, naming page and address.
    Never uses the network; running it again changes nothing."""
    html_dir, assets = Path(html_dir), Path(assets) if assets is not None else default_assets_dir()
    if not (html_dir / "index.html").is_file():
        raise HarnessError(f"{html_dir}: no index.html; run `asv --config benchmarks/asv.conf.json publish` first")
    manifest = read_manifest(assets)
    if manifest is None:
        raise HarnessError(f"{assets}: the asv site's assets are incomplete (no complete {MANIFEST}); " + ASSETS_HINT)
    vendor = html_dir / VENDOR
    vendor.mkdir(exist_ok=True)
    for name in sorted({n for e in manifest.entries for n in (e.local, e.licence_file)} | {MANIFEST}):
        shutil.copyfile(assets / name, vendor / name)
    links = {e.url: (e.local, _sri(vendor / e.local)) for e in manifest.entries}
    pages, replaced, problems = [], 0, []
    for page in sorted(html_dir.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        new, n = _rewrite_page(text, links, os.path.relpath(vendor, page.parent).replace(os.sep, "/"))
        if n:
            page.write_text(new, encoding="utf-8")
            pages.append(page)
            replaced += n
        problems += [f"{page}:{new.count(chr(10), 0, m.start()) + 1}: loads {url}" for m in _TAG.finditer(new)
                     if (url := _loads_external(m.group(0))) is not None]
    for css in sorted(html_dir.rglob("*.css")):
        text = css.read_text(encoding="utf-8", errors="replace")
        problems += [f"{css}: imports {m.group(1)}" for m in _CSS_EXTERNAL.finditer(text)]
    if problems:
        raise HarnessError(f"{html_dir}: still loads from other hosts, so it will not work offline: {'; '.join(problems)} "
                           "(not in the asset manifest: asv's pages changed? add them to ASSETS in "
                           "harness/track/asvsite.py and run `harness asv-assets`)")
    return SelfContained(html_dir=html_dir, pages=pages, replaced=replaced, vendor=vendor)


def publish_site(config: Path, assets: Path | None = None) -> SelfContained:
    """``asv --config CONFIG publish`` (its output passes through), then :func:`make_self_contained`
    on the configuration's ``html_dir`` with the assets of ``assets`` (default
    :func:`default_assets_dir`), fetched first when missing and npm is installed. The assets are
    checked before asv runs. Raises HarnessError on a bad configuration, missing assets (saying what
    to do), a missing asv, or asv failing."""
    conf = load_config(config)
    dest = ensure_assets(assets)
    if importlib.util.find_spec("asv") is None:
        raise HarnessError("asv is not installed (pip install -e '.[track]')")
    res = subprocess.run([sys.executable, "-m", "asv", "--config", str(config), "publish"])
    if res.returncode != 0:
        raise HarnessError(f"`asv --config {config} publish` failed (exit {res.returncode}; its output is above)")
    return make_self_contained(conf.html_dir, dest)
