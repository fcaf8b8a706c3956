"""The explorer app: its logic in a kernel, and the real thing served by voila and driven in headless Chromium."""
import json, os, re, shutil, socket, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path

import numpy as np
import pytest

from spectral_nb import explorer as E
from spectral_nb.explorer_data import check_run
from spectral_nb.config import NPIX, LINES, RUN_LAYOUT


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
    assert len(app.line.y) == NPIX and len(app.band.y) == 2     # the spectrum and its flux +-1 sigma band from raw.parquet
    lo, hi = np.asarray(app.band.y)
    assert np.nanmedian(hi - lo) > 0 and np.nanmedian(np.abs((lo + hi) / 2 - app.line.y)) < 1e-6   # centred on the flux
    assert app.rline.x is not None and 0 < len(app.rline.x) < NPIX   # the autoencoder reconstruction on its pixels
    app.lineset.value = 'all lines'
    for z in (0.0, 0.3):                                           # the marker z moves the dashed markers to that redshift's lines
        app.set_z(z)
        want = sorted(w * (1 + z) for w in LINES.values() if app.wave[0] <= w * (1 + z) <= app.wave[-1])
        np.testing.assert_allclose(sorted(np.asarray(app.mpred.x)[:, 0]), want)
    assert abs(app.zslide.min - 0.28) < 1e-9 and app.ztext.value == 0.3   # the fine slider re-centred on the typed z
    # linked selection: a filter keeps the cell; the latent box joins them; the current spectrum is marked in the latent view
    app.split.value = 'all'
    assert app.cm_sel == (t, p) and {c.description.split()[0] for c in app.chips.children} == {'cell'}
    cur = app.current()
    assert app.lat is not None and len(app.lat_cur.x) == (cur['row'] in set(app.lat['row']))
    inbox = app.lat.index[app.lat['row'].isin(app.selection()['row'])][:3].tolist() + app.lat.index[~app.lat['row'].isin(app.selection()['row'])][:2].tolist()
    app._on_latent({'new': inbox})
    sel = set(app.selection()['row'])
    assert sel == set(app.lat['row'][inbox[:3]]) and len(app.chips.children) == 2   # the box AND the cell, not the box alone
    assert sum(int(b.description) for b in app._cm_buttons.values()) == 5           # the matrix counts the box (with the filters)
    app.remove('latent')
    assert app.lat_rows is None and len(app.selection()) > 3


def test_subclass_model_scores_its_own_truth(galaxy_run):
    app = E.ExplorerApp(galaxy_run, 'mixed_galaxy', split='all')
    assert app.truth == 'label_galaxy' and (app.df['label_main'] == 'GALAXY').all()
    assert set(app.cm_classes) <= set(E.GALAXY_SUBCLASSES) and 'GALAXY' not in app.cm_classes
    assert sum(int(b.description) for b in app._cm_buttons.values()) == len(app.df)   # every galaxy in the matrix ('NULL' too)
    d = app.df
    t, p = d.groupby(['label_galaxy', 'predicted']).size().idxmax()
    app.click_cell(t, p)
    assert len(app.listing.options) == ((d['label_galaxy'] == t) & (d['predicted'] == p)).sum() > 0


def test_empty_state_names_the_filter_and_clears_the_spectrum(demo_run):
    app = E.ExplorerApp(demo_run)
    t = app.df.loc[app._base, 'truth'].value_counts().index[0]
    app.click_cell(t, t)
    assert len(app.line.y) == NPIX and app.panel.value
    app.outcome.value = 'incorrect'                  # a diagonal cell and 'incorrect': nothing
    assert len(app.selection()) == 0 and len(app.line.y) == 0 and len(app.mpred.x) == 0 and app.panel.value == ''
    assert 'snb-empty' in app.title.value and re.search(r'Relax <b class="snb-relax">(incorrect|cell)', app.title.value)
    app.remove('outcome')
    assert len(app.line.y) == NPIX and 'snb-empty' not in app.title.value


def test_zoom_is_kept_across_spectra_and_reset(demo_run):
    app = E.ExplorerApp(demo_run)
    full = (app._xs.min, app._xs.max)
    app._xs.min, app._xs.max = 6000.0, 6600.0               # what the wheel does in the browser
    y = (app._ys.min, app._ys.max)
    app.step(1)
    assert (app._xs.min, app._xs.max) == (6000.0, 6600.0)
    app.smooth.value = 4
    assert (app._xs.min, app._xs.max) == (6000.0, 6600.0)
    w = app.wave
    v = np.asarray(app.line.y)[(w >= 6000) & (w <= 6600)]
    assert app._ys.min <= np.percentile(v, 1) and app._ys.max >= np.percentile(v, 99)
    assert app._ys.max - app._ys.min < 3 * (np.percentile(v, 99.5) - np.percentile(v, 0.5)) + 1e-6   # fitted to the view
    app.reset_zoom()
    assert (app._xs.min, app._xs.max) == full and app._zoom is None
    assert app.fig.interaction is not None and app.fig.interaction.scales == {'x': [app._xs]}   # wheel and pan stay on, x only


def test_stars_get_star_lines_at_their_catalogue_z(demo_run):
    app = E.ExplorerApp(demo_run, split='all')
    app.cls.value = 'STAR'
    r = app.current()
    star = set(E.KEY_LINES['STAR'])
    assert len(app.clab.text) and set(app.clab.text) <= star          # a true star: star lines at its catalogue z (green)
    np.testing.assert_allclose(np.asarray(app.mcat.x)[:, 0], [E.LINES[n] * (1 + r['z']) for n in app.clab.text])
    app.df.loc[r['row'], 'predicted'] = 'STAR'                        # predicted a star: the marker starts at the catalogue z
    app.df.loc[r['row'], 'z_pred'] = 0.86                             # (not at the redshift network's z, made for galaxies)
    app.show()
    assert app.z == pytest.approx(r['z']) and set(app.mlab.text) <= star
    app.rest.value = True
    assert abs(app._xs.min - app.wave[0] / (1 + app.z)) < 1e-6 and 'rest-frame' in app.xaxis.label
    text = app.export_csv()
    assert text.count('\n') == len(app.selection()) + 1 and 'snb-csv-link' in app.csv.value


def test_explore_refuses_a_bad_run_or_model_with_the_fix(demo_run, tmp_path):
    from spectral_nb.cli import main
    with pytest.raises(FileNotFoundError, match='spectral-nb reproduce'):
        check_run(tmp_path / 'nope')
    with pytest.raises(ValueError, match="cnn_compact"):
        check_run(demo_run, 'mixed_main')
    assert main(['explore', '--run', str(demo_run), '--model', 'nope']) == 2


def test_explore_fails_loudly_on_a_busy_port(demo_run, capsys):
    from spectral_nb.cli import main
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen()
        port = s.getsockname()[1]
        assert main(['explore', '--run', str(demo_run), '--port', str(port)]) == 2   # before voila starts: no other port
    err = capsys.readouterr().err
    assert f'port {port}' in err and 'in use' in err and '--port' in err


def test_explore_reads_sdss_files(demo_run, tmp_path):
    "SDSS spec files (real DR18 ones shipped with ppxf) explored with the run's classifier."
    import glob
    from importlib import resources
    files = sorted(glob.glob(str(Path(resources.files('ppxf')) / 'spectra' / '*_SDSS_DR18.fits')))
    d = tmp_path / 'sdss'; d.mkdir()
    for i, f in enumerate(files):
        shutil.copy(f, d / f'spec-{i:04d}-55000-{i + 1:04d}.fits')
    app = E.ExplorerApp(demo_run, 'cnn_compact', data=str(d / 'spec-*.fits'))
    assert len(app.df) == len(files) and app.split.value == 'all' and len(app.listing.options) == len(files)
    assert len(app.line.y) == NPIX and len(app.band.y) == 2 and 'SDSS files' in app.widget.children[1].value
    from spectral_nb.explorer_serve import app_notebook, serve_command
    cmd = serve_command(str(d / 'spec-*.fits'), 'cnn_compact', _free_port())   # files given as --run: served as files
    src = json.loads(Path(cmd[3]).read_text())['cells'][0]['source']
    assert 'ExplorerApp(None' in src and 'data=' in src and '--Voila.port_retries=0' in cmd


# -- the real thing: voila serving `spectral-nb explore`, driven in headless Chromium

@pytest.fixture(scope='module')
def galaxy_run(demo_run, tmp_path_factory):
    "A copy of the demo run with a galaxy-subclass model (mixed_galaxy, one epoch) and its predictions cached."
    from spectral_nb.mixed import train_mixed
    from spectral_nb.explorer_data import explorer_predictions
    run = tmp_path_factory.mktemp('galaxy') / 'run'
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns('explorer'))
    train_mixed(run / RUN_LAYOUT.dataset, run / RUN_LAYOUT.mixed, 'galaxy', epochs=1, figures=False)
    explorer_predictions(run, 'mixed_galaxy')
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


class _Server:
    "`spectral-nb explore` on a free port (kernels culled `cull_s` seconds after their tab closes), stopped on exit."

    def __init__(self, run, model='cnn_compact', cull_s=4):
        self.port = _free_port()
        exe = Path(sys.executable).with_name('spectral-nb')
        self.log = open(Path(run) / f'explorer_server_{model}.log', 'w')
        env = dict(os.environ, SPECTRAL_NB_CULL_IDLE_S=str(cull_s))
        self.proc = subprocess.Popen([str(exe), 'explore', '--run', str(run), '--model', model, '--port', str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        for _ in range(240):   # /api answers without starting a kernel (GET / would run the app); any HTTP answer: up
            try: urllib.request.urlopen(f'http://127.0.0.1:{self.port}/api', timeout=2); break
            except urllib.error.HTTPError: break
            except OSError: time.sleep(0.25)
        self.url = f'http://127.0.0.1:{self.port}/'

    def kernels(self) -> int:
        import psutil
        try: kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess: return 0
        n = 0
        for k in kids:
            try: n += k.status() != psutil.STATUS_ZOMBIE and 'ipykernel' in ' '.join(k.cmdline())
            except psutil.Error: pass   # gone (or a zombie) while we looked
        return n

    def __enter__(self): return self

    def __exit__(self, *a):
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill()
        self.log.close()


def _open(chromium, url, width=1600, height=1100):
    page = chromium.new_page(viewport={'width': width, 'height': height})
    page.goto(url, timeout=180_000)
    page.wait_for_selector('.snb-cm-0-0', timeout=240_000)
    page.wait_for_function("document.querySelector('.snb-title') && document.querySelector('.snb-title').innerText.includes('specObjID')", timeout=60_000)
    page.wait_for_selector('.snb-spectrum svg path', timeout=60_000)
    page.wait_for_timeout(800)
    return page


def _shots(demo_run):
    d = demo_run / 'explorer' / 'screenshots'; d.mkdir(parents=True, exist_ok=True)
    return d


def _keep(shots):
    out = os.environ.get('SPECTRAL_NB_SCREENSHOTS')   # keep them somewhere a person can look
    if out: shutil.copytree(shots, Path(out), dirs_exist_ok=True)


X_TICKS = """() => Array.from(document.querySelectorAll('.snb-spectrum g.axis')[0].querySelectorAll('.tick text')).map(t => t.textContent).join(',')"""
TITLE_CHANGED = "old => document.querySelector('.snb-title').innerText !== old"


def _wheel(page, n=4):
    box = page.locator('.snb-spectrum').bounding_box()
    page.mouse.move(box['x'] + box['width'] * 0.55, box['y'] + box['height'] * 0.5)
    for _ in range(n):
        page.mouse.wheel(0, -200); page.wait_for_timeout(120)
    page.wait_for_timeout(1200)


def _chips(page):
    return page.eval_on_selector_all('.snb-chip', 'els => els.map(e => e.innerText.trim())')


def test_explorer_in_a_real_browser(demo_run, chromium):
    """voila serves the app; headless Chromium: no TensorFlow boxes, a matrix click, the linked selection as chips, zoom kept
    across next and a working reset, the empty state, and no kernel left once the tab is closed."""
    shots = _shots(demo_run)
    T0 = time.perf_counter()
    with _Server(demo_run) as srv:
        print('server up', round(time.perf_counter() - T0, 1))
        t = time.perf_counter()
        page = _open(chromium, srv.url)
        load_s = time.perf_counter() - t
        assert page.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0   # no TensorFlow log boxes
        assert srv.kernels() == 1
        page.screenshot(path=str(shots / 'app.png'), full_page=True)
        fig_w = page.locator('.snb-spectrum').bounding_box()['width']
        assert fig_w > 0.45 * 1600                                      # the spectrum takes the width the page has
        d = json.loads((demo_run / 'explorer' / 'app.ipynb').read_text())
        assert 'ExplorerApp' in d['cells'][0]['source']
        print('a matrix cli', round(time.perf_counter() - T0, 1))
        # a matrix click: the cell joins the selection (a chip) and its first spectrum is drawn
        old = page.inner_text('.snb-title')
        cls = ['GALAXY', 'QSO', 'STAR']
        shown = tuple(cls.index(c) for c in re.search(r'true (\w+).*predicted (\w+)', old).groups())
        counts = {(i, j): int(page.inner_text(f'.snb-cm-{i}-{j}')) for i in range(3) for j in range(3)}
        cell = max((k for k in counts if counts[k] > 0 and k != shown), key=lambda k: (k[0] != k[1], counts[k]))
        t = time.perf_counter()
        page.click(f'.snb-cm-{cell[0]}-{cell[1]}')
        page.wait_for_function(TITLE_CHANGED, arg=old, timeout=30_000)
        click_ms = 1e3 * (time.perf_counter() - t)
        assert re.search(rf'true {cls[cell[0]]}.*predicted {cls[cell[1]]}', page.inner_text('.snb-title'))
        page.wait_for_function("() => Array.from(document.querySelectorAll('.snb-chip')).some(e => e.innerText.includes('cell'))", timeout=20_000)
        print('zoom: the wh', round(time.perf_counter() - T0, 1))
        # zoom: the wheel zooms the wavelength axis; next keeps it; reset restores it and the wheel still works after
        full = page.evaluate(X_TICKS)
        _wheel(page)
        zoomed = page.evaluate(X_TICKS)
        assert zoomed != full
        page.screenshot(path=str(shots / 'zoomed.png'), full_page=True)
        old = page.inner_text('.snb-title')
        page.click('.snb-next')
        page.wait_for_function(TITLE_CHANGED, arg=old, timeout=30_000)
        page.wait_for_timeout(800)
        assert page.evaluate(X_TICKS) == zoomed, 'the zoom is lost on next'
        page.screenshot(path=str(shots / 'zoom_kept_after_next.png'), full_page=True)
        page.click('.snb-reset'); page.wait_for_timeout(1000)
        assert page.evaluate(X_TICKS) == full
        _wheel(page, 2)
        assert page.evaluate(X_TICKS) != full, 'the wheel no longer zooms after reset'
        page.click('.snb-reset'); page.wait_for_timeout(500)
        print('linked selec', round(time.perf_counter() - T0, 1))
        # linked selection: a filter keeps the cell; a latent box joins them; a chip's cross removes its part
        page.select_option('.snb-f-split select', 'all')
        page.wait_for_function("() => !Array.from(document.querySelectorAll('.snb-chip')).some(e => e.innerText.includes('split'))", timeout=20_000)
        assert any('cell' in c for c in _chips(page))
        lb = page.locator('.snb-latent').bounding_box()
        page.mouse.move(lb['x'] + lb['width'] * 0.15, lb['y'] + lb['height'] * 0.15)
        page.mouse.down(); page.mouse.move(lb['x'] + lb['width'] * 0.9, lb['y'] + lb['height'] * 0.85, steps=8); page.mouse.up()
        page.wait_for_function("() => Array.from(document.querySelectorAll('.snb-chip')).some(e => e.innerText.includes('latent box'))", timeout=20_000)
        chips = _chips(page)
        assert any('cell' in c for c in chips) and any('latent box' in c for c in chips)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / 'linked_selection.png'), full_page=True)
        page.click('.snb-chip-cell')
        page.wait_for_function("() => !Array.from(document.querySelectorAll('.snb-chip')).some(e => e.innerText.includes('cell'))", timeout=20_000)
        page.wait_for_timeout(500)
        n_sel = int(re.match(r'([\d,]+) spectr', page.inner_text('.snb-status')).group(1).replace(',', ''))
        total = sum(int(page.inner_text(f'.snb-cm-{i}-{j}')) for i in range(3) for j in range(3))
        assert total == n_sel                                     # the matrix counts the latent box's spectra
        page.click('.snb-chip-latent')
        page.wait_for_function("() => !Array.from(document.querySelectorAll('.snb-chip')).some(e => e.innerText.includes('latent'))", timeout=20_000)
        print('the empty st', round(time.perf_counter() - T0, 1))
        # the empty state: a diagonal cell with 'incorrect' selects nothing; the spectrum goes, the filter to relax is named
        diag = max(range(3), key=lambda i: int(page.inner_text(f'.snb-cm-{i}-{i}')))
        old = page.inner_text('.snb-title')
        page.click(f'.snb-cm-{diag}-{diag}')
        page.wait_for_function(TITLE_CHANGED, arg=old, timeout=30_000)
        page.select_option('.snb-f-outcome select', 'incorrect')
        page.wait_for_selector('.snb-empty', timeout=20_000)
        assert re.search(r'Relax (incorrect|cell)', page.inner_text('.snb-empty'))
        assert page.inner_text('.snb-panel').strip() == ''
        assert page.eval_on_selector_all('.snb-spectrum svg path.line', 'els => els.filter(e => (e.getAttribute("d") || "").length > 20).length') == 0
        page.screenshot(path=str(shots / 'empty_state.png'), full_page=True)
        (shots / 'timing.json').write_text(json.dumps(dict(page_load_s=load_s, click_to_draw_ms=click_ms, cell=cell)))
        print(f"explorer: page and widgets in {load_s:.1f} s, click to new spectrum {click_ms:.0f} ms; screenshots in {shots}")
        print('a closed tab', round(time.perf_counter() - T0, 1))
        # a closed tab stops its kernel (culled once it has no connection), while an open one is kept however idle
        page.wait_for_timeout(5000)
        assert srv.kernels() == 1, 'a kernel with its tab open was stopped'
        page.close()
        for _ in range(60):
            if srv.kernels() == 0: break
            time.sleep(0.5)
        assert srv.kernels() == 0, 'the kernel outlived its tab'
        print('kernel gone', round(time.perf_counter() - T0, 1))
        port = srv.port
    _keep(shots)
    time.sleep(1)   # stopping `spectral-nb explore` stops the server itself (it execs voila): nothing answers on the port
    with pytest.raises(OSError):
        urllib.request.urlopen(f'http://127.0.0.1:{port}/api', timeout=3)


def test_subclass_model_in_a_real_browser(galaxy_run, demo_run, chromium):
    "`--model mixed_galaxy`: the matrix is galaxy subclass against galaxy subclass, and a cell selects its spectra."
    import pandas as pd
    shots = _shots(demo_run)
    info = pd.read_hdf(galaxy_run / RUN_LAYOUT.dataset, 'source_info')
    gal = info[(info['label_main'] == 'GALAXY') & (info['split'] == 'test')]
    with _Server(galaxy_run, 'mixed_galaxy') as srv:
        page = _open(chromium, srv.url)
        assert page.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0
        heads = page.eval_on_selector_all('.snb-cm-head', 'els => els.map(e => e.innerText.trim())')
        assert 'GALAXY' not in heads and set(gal['label_galaxy']) <= set(heads)
        k = len(page.query_selector_all('[class*="snb-cm-0-"]'))
        counts = {(i, j): int(page.inner_text(f'.snb-cm-{i}-{j}')) for i in range(k) for j in range(k)}
        assert sum(counts.values()) == len(gal)                              # every test galaxy, NULL included, in the matrix
        assert max(sum(counts[i, j] for j in range(k)) for i in range(k)) < len(gal) or gal['label_galaxy'].nunique() == 1
        cell = max(counts, key=counts.get)
        page.click(f'.snb-cm-{cell[0]}-{cell[1]}')
        page.wait_for_function(f"() => document.querySelectorAll('.snb-list option').length === {counts[cell]}", timeout=30_000)
        assert len(page.query_selector_all('.snb-list option')) == counts[cell] > 0
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / 'subclass_matrix.png'), full_page=True)
    _keep(shots)
