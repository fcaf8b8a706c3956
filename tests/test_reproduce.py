"The reproduce chain, end to end on the smoke profile (marked `functional`; part of the README's test command)."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from spectral_nb.config import THESIS

pytestmark = pytest.mark.functional


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp('repro') / 'smoke'
    exe = Path(sys.executable).with_name('spectral-nb')
    r = subprocess.run([str(exe), '-q', 'reproduce', '--profile', 'smoke', '--source', 'mock', '--out', str(run)],
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_metrics_exist_are_probabilities_and_beat_the_majority_baseline(smoke_run):
    m = json.loads((smoke_run / 'metrics.json').read_text())
    assert m['source'] == 'mock' and m['profile'] == 'smoke'
    ex = m['experiments']
    from spectral_nb.evaluate import wilson_ci
    for name, folder in (('cnn', 'cnn'), ('cnn_compact', 'cnn'), ('mixed_main', 'mixed'), ('mixed_galaxy', 'mixed'), ('mixed_star', 'mixed')):
        e = ex[name]
        # the recorded metrics agree with the confusion matrix the run saved, recomputed here
        cm = pd.read_csv(smoke_run / folder / f'confusion_{name}.csv', index_col=0).to_numpy()
        k, n = int(np.trace(cm)), int(cm.sum())
        assert n == e['n_test'] and abs(e['test_accuracy'] - k / n) < 1e-9, (name, e['test_accuracy'], k, n)
        assert np.allclose(e['test_accuracy_ci95'], wilson_ci(k, n), atol=2e-4), (name, e['test_accuracy_ci95'], wilson_ci(k, n))
        assert abs(e['majority_baseline'] - cm.sum(1).max() / n) < 1e-9, name
        per = json.loads((smoke_run / folder / f'metrics_{name}.json').read_text())
        assert e['train_accuracy'] == per['train_accuracy'] and e['n_train'] == per['n_train'], name
        assert e['thesis_test_accuracy'] == THESIS[{'cnn_compact': 'cnn_main', 'cnn': 'cnn_main'}.get(name, name)]['test_acc']
    # with smoke-sized training the main-class models must still beat always answering GALAXY
    for name in ('mixed_main',):
        assert ex[name]['test_accuracy'] > ex[name]['majority_baseline'], ex[name]
    ae = json.loads((smoke_run / 'autoencoder' / 'metrics_autoencoder.json').read_text())
    assert ex['autoencoder']['latent_logreg_test_accuracy'] == ae['latent_logreg_test_accuracy'] > 0.4   # beats a 3-way guess
    assert set(m['stage_seconds']) == {'mock', 'preprocess', 'cnn', 'redshift', 'mixed', 'autoencoder', 'baselines', 'domain_shift', 'real'}
    # calibration and flag of every classifier, as its own metrics file has them; the head-to-head table on the same test rows
    for name, folder in (('cnn_compact', 'cnn'), ('mixed_main', 'mixed')):
        per = json.loads((smoke_run / folder / f'metrics_{name}.json').read_text())
        assert m['calibration'][name] == per['calibration'] and m['flag'][name] == per['flag'], name
        assert {'ece_before', 'ece_after', 'temperature'} <= set(m['calibration'][name]) and {'fraction_flagged', 'accuracy_unflagged'} <= set(m['flag'][name])
    h = m['head_to_head']
    assert sum(r['n'] for r in h['by_sn']) == ex['cnn_compact']['n_test'] == m['baselines']['template']['n']
    assert abs(h['speed_ratio'] - ex['cnn_compact']['predict_spectra_per_s'] / m['baselines']['template']['spectra_per_s']) < 1e-9
    # the network redshift: its numbers are those of the test-split predictions it saved, recomputed here
    z = m['redshift']['cnn_compact_z']
    pz = pd.read_csv(smoke_run / 'redshift' / 'redshift_cnn_compact_z.csv')
    from spectral_nb.baselines import redshift_metrics
    ref = redshift_metrics(pz.z_pred, pz.z, pz.label_main)
    for c in ('GALAXY', 'QSO', 'STAR'):
        assert z['n'][c] == ref[c]['n'] == (pz.label_main == c).sum() > 0, c
        assert abs(z['sigma_nmad'][c] - ref[c]['sigma_nmad']) < 1e-12 and abs(z['outlier_fraction'][c] - ref[c]['outlier_fraction']) < 1e-12, c
    assert (pz.z_err > 0).all() and np.isfinite(pz.z_pred).all()
    for meth in ('network', 'hybrid', 'template'):   # the three redshift methods side by side (issue 23's keys)
        r = m['redshift'][meth]
        assert r['spectra_per_s'] > 0, meth
        for c in ('GALAXY', 'QSO', 'STAR'):
            assert r['n'][c] == z['n'][c] and 0 <= r['outlier_fraction'][c] <= 1 and r['sigma_nmad'][c] >= 0, (meth, c)
    assert m['redshift']['hybrid']['sigma_nmad'] == z['sigma_nmad']   # the saved z_pred is the hybrid's
    b = m['baselines']   # the baselines stage, on the same test split as the networks
    assert b['template']['accuracy'] > b['majority']['accuracy'] and b['photometry_z']['accuracy'] > b['majority']['accuracy']
    assert b['template']['spectra_per_s'] > 0
    # the domain-shift stage: every model tested on held-out sources, its numbers agreeing with its own confusion matrices
    ds = m['domain_shift']
    assert ds['trained_on']['star'] == ['mastar', 'miles'] and ds['heldout']['star'] == ['stelib']
    assert set(ds['models']) == {'cnn_compact', 'mixed_all', 'mixed_no_z', 'mixed_flux_only', 'mixed_photometry_z'}
    for name, r in ds['models'].items():
        for part in ('all', 'heldout_sources'):
            h = r['heldout'][part]; cm = np.array(h['confusion'])
            assert cm.sum() == h['n'] > 0 and abs(h['accuracy'] - np.trace(cm) / cm.sum()) < 1e-9, (name, part)
            assert all(abs(h['recall'][c] - cm[i, i] / max(cm[i].sum(), 1)) < 1e-9 for i, c in enumerate(('GALAXY', 'QSO', 'STAR')))
    real = pd.DataFrame(ds['real'])
    assert len(real) == 22 and set(real.file) == {'dr18', 'spplate'} and real.predicted.isin(['GALAXY', 'QSO', 'STAR']).all()
    # the real stage: every main-class classifier scored on the real SDSS set, each object once, numbers agreeing with its confusion matrix
    rs = m['real']
    assert set(rs) == {'cnn', 'cnn_compact', 'mixed_main', 'mixed_no_z', 'mixed_all', 'mixed_flux_only'}
    objects = pd.read_csv(smoke_run / 'real' / 'real_predictions.csv')
    for name, r in rs.items():
        cm = np.array(r['confusion'])
        assert cm.sum() == r['n'] == (objects.model == name).sum() and 150 <= r['n'] <= 158, (name, r['n'])
        assert r['n_spectra'] + r['n_unusable'] == 172 and r['n_spectra'] >= r['n'], name
        rec = [cm[i, i] / cm[i].sum() for i in range(3)]
        assert all(abs(r['recall'][c] - rec[i]) < 1e-12 for i, c in enumerate(('GALAXY', 'QSO', 'STAR'))), name
        assert abs(r['balanced_accuracy'] - np.mean(rec)) < 1e-12 and abs(r['accuracy'] - np.trace(cm) / cm.sum()) < 1e-12, name
        assert set(r['by_survey']) == {'SDSS-I/II', 'BOSS', 'eBOSS'} and sum(b['n_spectra'] for b in r['by_survey'].values()) == r['n_spectra']
        assert (smoke_run / 'real' / 'figures' / f'misses_{name}.png').stat().st_size > 2000
        assert r['noise']['n'] == 200 and r['noise']['fraction_flagged'] >= 0.95, (name, r['noise'])   # spectra of no object
    for meth in ('network', 'hybrid'):   # the run's redshift network and hybrid on SDSS's redshifts
        assert set(m['real_redshift'][meth]['sigma_nmad']) == {'GALAXY', 'QSO', 'STAR'} and m['real_redshift'][meth]['n']['QSO'] > 100


def test_every_figure_the_report_links_exists_and_is_a_png(smoke_run):
    "The markdown rendering of the report notebook: its images exist, its headline row carries the held-out figure."
    from spectral_nb.reproduce import report_images
    imgs = report_images(smoke_run)
    assert len(imgs) >= 30
    for rel in imgs:
        p = smoke_run / rel
        assert p.exists() and p.stat().st_size > 2000, rel
        with Image.open(p) as im:
            assert im.format == 'PNG' and im.size[0] > 100
    md = (smoke_run / 'index.md').read_text()
    assert "MOCK SDSS survey" in md and "missing figure" not in md and "was not run" not in md
    assert (smoke_run / 'index.html').stat().st_size > 5000
    # the report is the executed report notebook, rerunnable from the run folder, rendered without code cells
    nb = json.loads((smoke_run / 'report.ipynb').read_text())
    inj = next(c for c in nb['cells'] if 'injected-parameters' in c['metadata'].get('tags', []))
    assert 'run = "."' in ''.join(inj['source']) and not any(o.get('output_type') == 'error' for c in nb['cells'] for o in c.get('outputs', []))
    assert 'collect_metrics' not in md and 'show_figure' not in md and 'Open `RUN/report.ipynb`' not in md
    assert len(list((smoke_run / 'notebooks').glob('*.ipynb'))) == 9
    assert 'held out of training' in md or 'held-out' in md
    # the headline table puts each model's held-out-source accuracy beside its in-mock one
    m = json.loads((smoke_run / 'metrics.json').read_text())
    row = next(l for l in md.splitlines() if l.startswith('| compact CNN (ours) |'))
    held = m['domain_shift']['models']['cnn_compact']['heldout']['heldout_sources']['accuracy']
    assert f"**{held:.3f}**" in row.split('|')[6], row
    assert 'held-out sources' in md and 'trained on mastar + miles stars' in md
    # ... and its real-SDSS balanced accuracy beside them
    assert f"**{m['real']['cnn_compact']['balanced_accuracy']:.3f}**" in row.split('|')[7], row
    assert 'Real SDSS data.' in md and 'real SDSS objects it misses' in md


# Every figure (by caption) and table (by a header cell) that the hand-written report had before it became a notebook.
REPORT_CAPTIONS = (
    ['Example spectra of each class, key lines marked', 'One spectrum per star group', 'One spectrum per galaxy subclass',
     'Redshift, r magnitude and S/N per class', 'u-g vs g-r colours', 'BPT diagram of the galaxies',
     'A spectrum through the preprocessing steps', 'Equivalent widths per class', 'Gaussian smoothing, sigma = 4 pixels'] +
    [f'{n}: {what}' for n in ('cnn', 'cnn_compact', 'mixed_main', 'mixed_galaxy', 'mixed_star')
     for what in ('confusion matrix, rows = true class', 'accuracy and loss per epoch', 'typical correct predictions', 'incorrect predictions', 'accuracy by S/N')] +
    ['by number of sources, ours and the thesis', 'Reconstructions per class', 'Pair plot of the 14 latent values by class', 'Latent values against redshift',
     'PCA projection of the latent space', 'Template fit: confusion matrix', 'Template-fit redshift against the catalogue redshift', 'Accuracy by S/N of the baselines'] +
    [f'{n}: {what}' for n in ('cnn_compact', 'mixed_main') for what in ('reliability diagram before and after temperature scaling', 'accuracy against the fraction of spectra kept')] +
    ['cnn_compact_z: network redshift against the catalogue redshift', 'Per-class recall on held-out sources', 'Accuracy by S/N on held-out sources',
     'The 20 BOSS fibres of spPlate-4055-55359'] +
    [f'{n}: {what}' for n in ('cnn', 'cnn_compact', 'mixed_main', 'mixed_no_z', 'mixed_all', 'mixed_flux_only')
     for what in ('confusion matrix on real SDSS, each object counted once', 'the real SDSS objects it misses')])
REPORT_TABLES = ('wall time (s)', 'held-out sources [95% CI]', 'n_conv_layers', 'val_acc_best5', 'baseline', 'ECE after', 'template fit', 'sigma_NMAD', 'within 1 / 2 Z_ERR',
                 'held-out sources acc [95% CI]', 'sdss_class', 'balanced accuracy')


def test_report_html_in_chromium_shows_every_table_and_figure(smoke_run, chromium):
    "index.html (the report notebook, rendered without code) opened in headless chromium: every caption, a drawn image for each, every table."
    page = chromium.new_page(viewport={'width': 1300, 'height': 1000})
    page.goto((smoke_run / 'index.html').as_uri())
    page.wait_for_load_state('load')
    text = page.inner_text('body')
    missing = [c for c in REPORT_CAPTIONS if c not in text]
    assert not missing, missing
    assert 'MOCK SDSS survey' in text and 'thesis' in text and 'Traceback' not in text
    drawn = page.eval_on_selector_all('img', 'ims => ims.filter(i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100).length')
    assert drawn >= len(REPORT_CAPTIONS), (drawn, len(REPORT_CAPTIONS))
    heads = page.eval_on_selector_all('table', 'ts => ts.map(t => Array.from(t.querySelectorAll("th")).map(h => h.innerText.trim()))')
    for h in REPORT_TABLES: assert any(h in t for t in heads), (h, heads)
    assert page.eval_on_selector_all('pre, .jp-InputArea', 'els => els.filter(e => e.innerText.includes("show_figure(")).length') == 0   # no code
    page.screenshot(path=str(smoke_run / 'report_screenshot.png'), full_page=False)
    out = os.environ.get('SPECTRAL_NB_SCREENSHOTS')
    if out: Path(out).mkdir(parents=True, exist_ok=True); page.screenshot(path=str(Path(out) / 'report_full.png'), full_page=True)


def test_rerun_skips_complete_stages(smoke_run):
    from spectral_nb.reproduce import reproduce
    before = {p.name: p.stat().st_mtime for p in (smoke_run / '.stages').glob('*.json')}
    s = reproduce(smoke_run, 'smoke', 'mock', 42)
    assert s['skipped'] == ['mock', 'preprocess', 'cnn', 'redshift', 'mixed', 'autoencoder', 'baselines', 'domain_shift', 'real']
    assert {p.name: p.stat().st_mtime for p in (smoke_run / '.stages').glob('*.json')} == before


def test_killed_run_resumes_without_redoing_complete_stages(tmp_path):
    run = tmp_path / 'killed'
    exe = Path(sys.executable).with_name('spectral-nb')
    cmd = [str(exe), '-q', 'reproduce', '--profile', 'smoke', '--out', str(run), '--stages', 'mock', 'preprocess', 'baselines']
    p = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (run / '.stages' / 'preprocess.json').exists():   # kill during the baselines stage (its kernel takes longer than 3 s to start)
        assert time.time() - t0 < 600 and p.poll() is None
        time.sleep(0.5)
    time.sleep(3)
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert not (run / '.stages' / 'baselines.json').exists()
    mock_marker = (run / '.stages' / 'mock.json').stat().st_mtime
    raw_before = (run / 'data' / 'raw.parquet').read_bytes()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s['skipped'] == ['mock', 'preprocess']
    assert (run / '.stages' / 'mock.json').stat().st_mtime == mock_marker
    assert (run / 'data' / 'raw.parquet').read_bytes() == raw_before
    assert (run / 'baselines' / 'metrics.json').exists() and (run / '.stages' / 'baselines.json').exists()


def test_failing_stage_stops_the_chain_with_a_clear_message(tmp_path):
    exe = Path(sys.executable).with_name('spectral-nb')
    run = tmp_path / 'fail'
    (run / 'data').mkdir(parents=True)
    # a preprocess stage without the mock stage before it: no raw.parquet
    r = subprocess.run([str(exe), '-q', 'reproduce', '--profile', 'smoke', '--out', str(run), '--stages', 'preprocess', 'cnn'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "stage 'preprocess' failed" in r.stderr and 'No raw-record file' in r.stderr
    assert not (run / '.stages' / 'baselines.json').exists()


def test_relative_run_folder_keeps_outputs_in_it(tmp_path, monkeypatch):
    "`make report` passes a relative --out: stage outputs must land in that folder, not below the notebooks' cwd."
    from spectral_nb.reproduce import reproduce, report_images
    monkeypatch.chdir(tmp_path)
    reproduce('reports/rel', 'smoke', 'mock', 42, stages=['mock', 'preprocess'])
    run = tmp_path / 'reports' / 'rel'
    assert (run / 'data' / 'raw.parquet').exists() and (run / 'data' / 'dataset.h5').exists()
    assert not (run / 'reports').exists()
    imgs = report_images(run)
    assert imgs and all((run / i).exists() for i in imgs)
    from spectral_nb.records import count_records
    assert json.loads((run / 'metrics.json').read_text())['preprocess']['n_in'] == count_records(run / 'data' / 'raw.parquet') > 540
