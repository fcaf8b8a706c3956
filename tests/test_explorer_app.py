"""The explorer app: its logic in a kernel, and the real thing served by voila and driven in headless Chromium."""
import json, os, re, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import numpy as np
import pytest

from spectral_nb import explorer as E
from spectral_nb.explorer_data import check_run
from spectral_nb.config import NPIX


def test_app_lists_a_cell_steps_and_reads_only_what_it_shows(demo_run, monkeypatch):
    app = E.ExplorerApp(demo_run)
    reads = []
    real = E.read_fluxes
    monkeypatch.setattr(E, 'read_fluxes', lambda p, a=0, b=None: reads.append((a, b)) or real(p, a, b))
    d = app.df[app.df['split'] == 'test']
    t, p = d.groupby(['label_main', 'predicted']).size().idxmax()
    app.click_cell(t, p)
    rows = [v for _, v in app.listing.options]
    assert len(rows) == ((d['label_main'] == t) & (d['predicted'] == p)).sum() > 0
    assert (app.current()['label_main'], app.current()['predicted']) == (t, p)
    app.step(1)
    assert reads and all(b - a == 1 for a, b in reads)           # one row per spectrum shown, never the whole table
    assert len(app.line.y) == NPIX and len(app.band.y) == 2     # the spectrum and its noise band from raw.parquet
    assert app.rline.x is not None and 0 < len(app.rline.x) < NPIX   # the autoencoder reconstruction on its pixels
    for z in (0.0, 0.3):                                           # the slider moves the dashed markers to that redshift's lines
        app.zslide.value = z
        want = sorted(w * (1 + z) for w in E.LINES.values() if app.wave[0] <= w * (1 + z) <= app.wave[-1])
        np.testing.assert_allclose(sorted(np.asarray(app.mpred.x)[:, 0]), want)
    app.outcome.value = 'incorrect'
    wrong = app.df.iloc[[v for _, v in app.listing.options]]
    assert (wrong['predicted'] != wrong['label_main']).all() and app.cm_sel is None
    assert app.lat is not None and len(app.lat) == len(app.info) and {'pc1', 'pc2'} <= set(app.lat.columns)
    app._on_latent({'new': [0, 1, 2]})
    assert sorted(v for _, v in app.listing.options) == sorted(app.lat['row'].iloc[:3])


def test_explore_refuses_a_bad_run_or_model_with_the_fix(demo_run, tmp_path):
    from spectral_nb.cli import main
    with pytest.raises(FileNotFoundError, match='spectral-nb reproduce'):
        check_run(tmp_path / 'nope')
    with pytest.raises(ValueError, match="cnn_compact"):
        check_run(demo_run, 'mixed_main')
    assert main(['explore', '--run', str(demo_run), '--model', 'nope']) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_explorer_in_a_real_browser(demo_run, chromium):
    "voila serves the app; headless Chromium clicks a confusion-matrix cell and the spectrum shown changes."
    port = _free_port()
    exe = Path(sys.executable).with_name('spectral-nb')
    log = open(demo_run / 'explorer_server.log', 'w')
    srv = subprocess.Popen([str(exe), 'explore', '--run', str(demo_run), '--port', str(port)], stdout=log, stderr=subprocess.STDOUT)
    shots = demo_run / 'explorer' / 'screenshots'; shots.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(120):
            try: urllib.request.urlopen(f'http://127.0.0.1:{port}/api', timeout=2); break
            except Exception: time.sleep(0.5)
        page = chromium.new_page(viewport={'width': 1500, 'height': 1100})
        t = time.perf_counter()
        page.goto(f'http://127.0.0.1:{port}/', timeout=180_000)
        page.wait_for_selector('.snb-cm-0-0', timeout=240_000)
        page.wait_for_function("document.querySelector('.snb-title') && document.querySelector('.snb-title').innerText.includes('specObjID')", timeout=60_000)
        page.wait_for_selector('.snb-spectrum svg path', timeout=60_000)
        load_s = time.perf_counter() - t
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shots / 'app.png'), full_page=True)
        old = page.inner_text('.snb-title')
        paths = lambda: page.eval_on_selector_all('.snb-spectrum svg path', 'els => els.map(e => e.getAttribute("d") || "").join("|")')
        old_paths = paths()
        d = json.loads((demo_run / 'explorer' / 'app.ipynb').read_text())   # the app notebook the server was given
        assert 'ExplorerApp' in d['cells'][0]['source']
        # click the off-diagonal (or diagonal) cell with the most spectra, other than the cell of the spectrum shown
        cls = ['GALAXY', 'QSO', 'STAR']
        shown = tuple(cls.index(c) for c in re.search(r'true (\w+).*predicted (\w+)', old).groups())
        counts = {(i, j): int(page.inner_text(f'.snb-cm-{i}-{j}')) for i in range(3) for j in range(3)}
        cell = max((k for k in counts if counts[k] > 0 and k != shown), key=lambda k: (k[0] != k[1], counts[k]))
        t = time.perf_counter()
        page.click(f'.snb-cm-{cell[0]}-{cell[1]}')
        page.wait_for_function("old => document.querySelector('.snb-title').innerText !== old", arg=old, timeout=30_000)
        page.wait_for_function("old => Array.from(document.querySelectorAll('.snb-spectrum svg path')).map(e => e.getAttribute('d') || '').join('|') !== old",
                               arg=old_paths, timeout=30_000)
        click_ms = 1e3 * (time.perf_counter() - t)
        new = page.inner_text('.snb-title')
        assert new != old and 'specObjID' in new
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / 'after_click.png'), full_page=True)
        page.locator('.snb-spectrum').screenshot(path=str(shots / 'spectrum.png'))
        page.locator('.snb-latent').screenshot(path=str(shots / 'latent.png'))
        (shots / 'timing.json').write_text(json.dumps(dict(page_load_s=load_s, click_to_draw_ms=click_ms, cell=cell)))
        print(f"explorer: page and widgets in {load_s:.1f} s, click to new spectrum drawn {click_ms:.0f} ms; screenshots in {shots}")
        for f in ('app.png', 'after_click.png', 'spectrum.png', 'latent.png'): assert (shots / f).stat().st_size > 5000, f
        out = os.environ.get('SPECTRAL_NB_SCREENSHOTS')   # keep them somewhere a person can look
        if out: shutil.copytree(shots, Path(out), dirs_exist_ok=True)
    finally:
        srv.terminate()
        try: srv.wait(20)
        except subprocess.TimeoutExpired: srv.kill()
        log.close()
    time.sleep(1)   # stopping `spectral-nb explore` stops the server itself (it execs voila): nothing answers on the port
    with pytest.raises(OSError):
        urllib.request.urlopen(f'http://127.0.0.1:{port}/api', timeout=3)
