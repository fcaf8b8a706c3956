"""Issue 10 (trustworthy results): stale reproduce stages, a random SDSS sample, one-line errors checked before the work,
quiet and complete CLI, an independent fake SAS layout, Retry-After, and the Wilson interval from SciPy."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from spectral_nb import query as Q
from spectral_nb import reproduce as R
from spectral_nb.cli import main, build_parser
from spectral_nb.fakesdss import FakeSDSS
from spectral_nb import fakesdss, download as D

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name('spectral-nb')
FAST = Q.RateLimiter(10 ** 6)


def err_lines(capsys):
    return [l for l in capsys.readouterr().err.splitlines() if l.strip()]


# ---- item 3: a stage's key covers its notebook and the package's code ---------------------------------------------

def test_changed_notebook_or_package_code_reruns_the_stage(tmp_path, monkeypatch):
    nbs = tmp_path / 'nbs'; nbs.mkdir()
    shutil.copy(ROOT / 'nbs' / R.NOTEBOOKS['mock'], nbs / R.NOTEBOOKS['mock'])
    pkg = tmp_path / 'pkg'; pkg.mkdir()
    for f in (ROOT / 'spectral_nb').glob('*.py'): shutil.copy(f, pkg / f.name)
    monkeypatch.setenv('SPECTRAL_NB_NBS', str(nbs))
    monkeypatch.setattr(R, 'package_dir', lambda: pkg)
    ran = []
    monkeypatch.setattr(R, 'run_stage', lambda stage, run, params, out_dir: ran.append(stage) or 0.01)
    go = lambda: R.reproduce(tmp_path / 'run', 'smoke', 'mock', stages=['mock'], report=False)['skipped']
    assert go() == [] and go() == ['mock'] and ran == ['mock']
    nb = nbs / R.NOTEBOOKS['mock']; nb.write_text(nb.read_text() + ' ')          # the stage notebook changed
    assert go() == [] and ran == ['mock'] * 2 and go() == ['mock']
    (pkg / 'preprocess.py').write_text((pkg / 'preprocess.py').read_text() + '\n# changed\n')   # a package file changed
    assert go() == [] and ran == ['mock'] * 3 and go() == ['mock']


# ---- item 4: the real query draws a seeded random sample ----------------------------------------------------------

def catalog(n_per_class=30):
    rows = []
    for j, cls in enumerate(('GALAXY', 'QSO', 'STAR')):
        for i in range(n_per_class):
            plate = 266 + 40 * i + j                                   # specObjID grows with the plate, as in SDSS
            rows.append(dict(specObjID=np.uint64((plate << 50) | ((i + 1) << 38) | ((51602 - 50000) << 24)), bestObjID=1, fluxObjID=1,
                             targetObjID=1, plate=plate, mjd=51602, fiberID=i + 1, run2d='26', ra=1.0, dec=2.0, subClass='',
                             z=0.1, zErr=1e-4, zWarning=0, **{'class': cls}, **{f'petroMag{e}_{b}': 18.0 for e in ('', 'Err') for b in 'ugriz'}))
    cat = pd.DataFrame(rows); cat['specObjID'] = cat['specObjID'].astype('uint64')
    return cat


def test_query_sql_orders_by_a_seeded_key_without_overflow():
    sql = Q.build_query('STAR', 10, seed=3)
    P, A, B = Q.sample_key(3)
    key = f'(((s.specObjID % {P}) * {A} + {B}) % {P})'
    assert sql.endswith(f'ORDER BY {key}, s.specObjID') and 'ORDER BY s.specObjID' not in sql
    assert (P - 1) * A + B < 2 ** 63 and 0 < A < P and 0 <= B < P
    assert Q.sample_key(3) == Q.sample_key(3) and Q.sample_key(3) != Q.sample_key(4)
    with pytest.raises(Q.QueryError): Q.build_query('STAR', 10, seed=-1)
    with pytest.raises(Q.QueryError): Q.build_query('STAR', 10, seed=3, after_key='1 OR 1=1')


def test_query_through_the_fake_server_is_a_random_reproducible_sample():
    cat = catalog()
    with FakeSDSS(cat) as srv:
        run = lambda seed, page: Q.query_catalog(15, 'balanced', runner=Q.astroquery_runner(srv.url), page_size=page,
                                                 limiter=FAST, progress=False, seed=seed)
        a, paged, b = run(1, 100), run(1, 2), run(2, 100)
    first = set(cat.groupby('class').head(5).specObjID)                 # what ORDER BY specObjID would return
    assert set(a.specObjID) != first and len(set(a.specObjID) & first) < 8
    assert a.specObjID.tolist() == paged.specObjID.tolist()             # paging by (key, id) neither loses nor repeats rows
    assert set(a.specObjID) != set(b.specObjID)
    assert a['class'].value_counts().to_dict() == {'GALAXY': 5, 'QSO': 5, 'STAR': 5} and 'sampleKey' not in a
    # the sample spreads over the survey's plates, not its first ones
    assert a.plate.max() > cat.plate.quantile(0.6)


# ---- item 7: errors, not tracebacks; inputs and outputs checked before the work -----------------------------------

def test_query_offline_is_one_line_not_a_traceback(tmp_path):
    r = subprocess.run([str(EXE), 'query', '-q', '--n', '3', '--skyserver-url', 'http://127.0.0.1:9', '--out', str(tmp_path / 'c.parquet')],
                       capture_output=True, text=True, timeout=120)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1 and 'Cannot reach SkyServer' in lines[0] and '--skyserver-url' in lines[0], lines


@pytest.mark.parametrize('cmd', ['train', 'predict'])
def test_junk_h5_is_refused_before_the_work(tmp_path, capsys, cmd):
    junk = tmp_path / 'junk.h5'; junk.write_bytes(b'this is not HDF5' * 50)
    (tmp_path / 'model').mkdir()
    argv = ['train', 'mixed', '--data', str(junk), '--out', str(tmp_path / 'run')] if cmd == 'train' else \
           ['predict', '--model', str(tmp_path / 'model'), '--data', str(junk), '--out', str(tmp_path / 'p.csv')]
    assert main(['-q', *argv]) == 2
    lines = err_lines(capsys)
    assert len(lines) == 1 and 'junk.h5' in lines[0] and 'spectral-nb preprocess' in lines[0], lines
    assert not (tmp_path / 'run').exists() and not (tmp_path / 'p.csv').exists()


def test_preprocess_out_an_existing_folder_fails_before_the_work(tmp_path, capsys):
    (tmp_path / 'outdir').mkdir()
    assert main(['-q', 'preprocess', '--raw', str(ROOT / 'pyproject.toml'), '--out', str(tmp_path / 'outdir')]) == 2
    lines = err_lines(capsys)
    assert len(lines) == 1 and 'is a folder' in lines[0] and 'dataset.h5' in lines[0], lines
    assert list((tmp_path / 'outdir').iterdir()) == []


# ---- item 9: negative retries are refused, not summarised -----------------------------------------------------------

def test_negative_retries_are_refused_before_any_summary(tmp_path, capsys):
    cat = catalog(2)
    with pytest.raises(ValueError, match='retries'):
        D.download(cat, tmp_path / 'a', retries=-1, progress=False)
    assert not (tmp_path / 'a' / 'download_summary.json').exists()
    cat.to_parquet(tmp_path / 'c.parquet')
    with pytest.raises(SystemExit) as e:
        main(['-q', 'download', '--catalog', str(tmp_path / 'c.parquet'), '--out', str(tmp_path / 'b'), '--retries', '-1'])
    assert e.value.code == 2 and 'integer >= 0' in capsys.readouterr().err
    assert not (tmp_path / 'b' / 'download_summary.json').exists()


# ---- item 10: quiet, complete, said once --------------------------------------------------------------------------

def test_cli_silences_tensorflow_before_it_loads():
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    r = subprocess.run([sys.executable, '-c', 'import os, spectral_nb.cli; print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"))'],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.stdout.strip() == '3', r.stderr[-2000:]   # 2 still lets tf.data's node_def_util errors through


def test_an_error_is_printed_once(tmp_path):
    r = subprocess.run([str(EXE), 'preprocess', '--raw', str(tmp_path / 'nope.parquet'), '--out', str(tmp_path / 'd.h5')],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count('No raw-record file') == 1, r.stderr


def test_cnn_refuses_other_tasks(tmp_path, capsys):
    assert main(['-q', 'train', 'cnn', '--task', 'star', '--data', str(tmp_path / 'none.h5'), '--out', str(tmp_path / 'r')]) == 2
    lines = err_lines(capsys)
    assert len(lines) == 1 and '--task star' in lines[0] and 'train mixed --task star' in lines[0], lines


def test_quiet_flag_works_after_the_subcommand_and_every_option_has_help():
    p = build_parser()
    assert p.parse_args(['preprocess', '-q', '--raw', 'x']).quiet is True
    assert p.parse_args(['-q', 'preprocess', '--raw', 'x']).quiet is True
    assert p.parse_args(['preprocess', '--raw', 'x']).quiet is False
    subs = p._subparsers._group_actions[0].choices
    missing = {name: [a.dest for a in sp._actions if not a.help] for name, sp in subs.items()}
    assert not any(missing.values()), missing


# ---- item 11: the fake SAS layout is written independently of the client's ----------------------------------------

def test_fake_sas_layout_is_independent_and_matches_sdss_documentation():
    assert D.sas_path is not fakesdss.sas_path
    # https://dr16.sdss.org/optical/spectrum/view/data/access: sas/dr16/eboss/spectro/redux/v5_13_0/spectra/lite/4055/spec-4055-55359-0596.fits
    docs = [((4055, 55359, 596, 'v5_13_0', 16), 'dr16/eboss/spectro/redux/v5_13_0/spectra/lite/4055/spec-4055-55359-0596.fits'),
            ((266, 51602, 1, '26', 17), 'dr17/sdss/spectro/redux/26/spectra/lite/0266/spec-0266-51602-0001.fits'),
            ((3586, 55181, 1, 'v5_13_2', 17), 'dr17/eboss/spectro/redux/v5_13_2/spectra/lite/3586/spec-3586-55181-0001.fits')]
    for args, want in docs:
        assert D.sas_path(*args) == want and fakesdss.sas_path(*args) == want


# ---- item 12: Retry-After is honoured; the Wilson interval comes from SciPy ----------------------------------------

def test_retry_after_is_honoured():
    import glob, ppxf
    spec = Path(sorted(glob.glob(str(Path(ppxf.__file__).parent / 'spectra' / '*_SDSS_DR18.fits')))[0]).read_bytes()
    with FakeSDSS(files={'a/spec.fits': spec}, faults=dict(throttle=1, retry_after=1)) as srv:
        t0 = time.monotonic()
        body, reason, attempts = D.fetch(f'{srv.sas_url}/a/spec.fits', timeout=5, retries=3, backoff=0.0)
        dt = time.monotonic() - t0
    assert srv.faults_served == {'429': 1} and srv.requests == {'/sas/a/spec.fits': 2}
    assert attempts == 2 and dt >= 0.95, (attempts, dt)       # waited the server's 1 s, with backoff 0
    assert reason == '' and body == spec


def test_wilson_ci_is_scipys_wilson_interval():
    from scipy.stats import binomtest
    from spectral_nb.evaluate import wilson_ci
    for k, n in ((80, 100), (0, 10), (10, 10), (945, 1000)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method='wilson')
        assert wilson_ci(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    z = 1.959963984540054; p, n = 0.8, 100
    c = (p + z * z / (2 * n)) / (1 + z * z / n); w = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_ci(80, 100) == pytest.approx((c - w, c + w), abs=1e-12)
    assert np.isnan(wilson_ci(0, 0)).all()
    with pytest.raises(ValueError): wilson_ci(11, 10)
