"The real-SDSS path against a local fake SDSS: SQL safety, balanced paged queries, faulty downloads, kill-and-resume."
import glob, json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
import ppxf
from spectral_nb import query as Q
from spectral_nb.fakesdss import FakeSDSS, sas_path, write_spec_fits
from spectral_nb.download import download, to_records, fits_ok, fetch
from spectral_nb.mock import generate
from spectral_nb.preprocess import preprocess
from spectral_nb.dataset import read_fluxes
from spectral_nb.sdssfiles import read_sdss_spec
from spectral_nb.config import CLASSES

FIXTURES = sorted(glob.glob(str(Path(ppxf.__file__).parent / 'spectra' / '*_SDSS_DR18.fits')))
FAST = Q.RateLimiter(10 ** 6)


@pytest.fixture(scope='module')
def world():
    "A fake SDSS holding 90 mock spectra written as real-format spec files plus the two real DR18 files."
    cat, pix = generate(90, seed=8)
    rows, files = [], {}
    for i in range(len(cat)):
        c = cat.iloc[i].to_dict(); c['run2d'] = '26' if i % 2 else 'v5_13_2'
        files[sas_path(c['plate'], c['mjd'], c['fiberID'], c['run2d'])] = write_spec_fits(c, {k: v[i] for k, v in pix.items()})
        rows.append(c)
    for p in FIXTURES:
        c, _ = read_sdss_spec(p)
        files[sas_path(c['plate'], c['mjd'], c['fiberID'], c['run2d'])] = Path(p).read_bytes()
        rows.append({**c, **{f'petroMag_{b}': 16.0 for b in 'ugriz'}, **{f'petroMagErr_{b}': 0.02 for b in 'ugriz'}})
    catalog = pd.DataFrame(rows)
    for k in ('bestObjID', 'fluxObjID', 'targetObjID'): catalog[k] = catalog['specObjID']
    catalog['specObjID'] = catalog['specObjID'].astype('uint64')
    return catalog, files


# ---- SQL safety ---------------------------------------------------------------------------------------------------

INJECTIONS = ["GALAXY'; DROP TABLE SpecObjAll; --", "STAR' OR '1'='1", 'QSO UNION SELECT * FROM PhotoObj']


@pytest.mark.parametrize('bad', INJECTIONS)
def test_class_injection_rejected(bad):
    with pytest.raises(Q.QueryError, match='Unknown class'):
        Q.build_query(bad, 10)


@pytest.mark.parametrize('kw', [dict(limit='10; DROP TABLE x'), dict(limit=10 ** 7), dict(limit=0), dict(limit=2.5),
                                dict(after='0 OR 1=1'), dict(after=-1), dict(data_release='17; --'), dict(data_release=99),
                                dict(z_range=("0.1", 1)), dict(z_range=(0.1, '1) OR (1=1')), dict(z_range=(1.0, 0.1)),
                                dict(limit=True)])
def test_every_numeric_parameter_is_validated(kw):
    args = dict(cls='STAR', limit=10) | kw
    with pytest.raises(Q.QueryError):
        Q.build_query(args.pop('cls'), args.pop('limit'), **args)


def test_query_text_is_only_whitelisted_tokens():
    sql = Q.build_query('QSO', 100, after=5, data_release=16, emission_lines=True, z_range=(0.1, 2))
    assert "s.class = 'QSO'" in sql and 'TOP 100' in sql and 's.specObjID > 5' in sql and 'emissionLinesPort' in sql
    assert ';' not in sql and '--' not in sql


@pytest.mark.parametrize('mix', [{'GALAXY': 0.5, "QSO'--": 0.5}, {'GALAXY': 2.0}])
def test_bad_mix_rejected(mix):
    with pytest.raises(ValueError):
        Q.class_counts(10, mix)


# ---- queries ------------------------------------------------------------------------------------------------------

def test_balanced_paged_query_through_astroquery(world, tmp_path):
    catalog, files = world
    calls = []
    limiter = Q.RateLimiter(60, sleep=lambda s: calls.append(s))
    with FakeSDSS(catalog, files) as srv:
        cat = Q.query_catalog(30, 'balanced', 17, tmp_path / 'catalog.parquet', Q.astroquery_runner(srv.url), page_size=4, limiter=limiter, progress=False)
    assert cat['class'].value_counts().to_dict() == {'GALAXY': 10, 'QSO': 10, 'STAR': 10}
    assert cat.specObjID.is_unique and len(pd.read_parquet(tmp_path / 'catalog.parquet')) == 30
    assert sum(srv.requests.values()) >= 9          # paged: 3 pages of <= 4 rows per class
    assert len(calls) >= 8 and all(0 < c <= 1.0 for c in calls)   # paced at 60 queries per minute


def test_short_supply_is_logged_not_padded(world):
    catalog, files = world
    with FakeSDSS(catalog, files) as srv:
        cat = Q.query_catalog(300, 'balanced', runner=Q.astroquery_runner(srv.url), limiter=FAST, progress=False)
    assert cat['class'].value_counts().to_dict() == catalog['class'].value_counts().to_dict()


def test_empty_result_is_a_clear_error_and_writes_nothing(tmp_path):
    with FakeSDSS(pd.DataFrame({'specObjID': pd.Series([], dtype='uint64'), 'class': pd.Series([], dtype=str)})) as srv:
        with pytest.raises(Q.QueryError, match='returned no rows'):
            Q.query_catalog(10, runner=Q.astroquery_runner(srv.url), limiter=FAST, out=tmp_path / 'c.parquet', progress=False)
    assert not (tmp_path / 'c.parquet').exists()


def test_rate_limiter_spaces_calls():
    t = [0.0]; slept = []
    lim = Q.RateLimiter(60, clock=lambda: t[0], sleep=lambda s: (slept.append(s), t.__setitem__(0, t[0] + s)))
    for _ in range(5): lim.wait()
    assert slept == [1.0] * 4


# ---- downloads ----------------------------------------------------------------------------------------------------

def test_html_truncated_and_junk_bodies_are_rejected():
    good = Path(FIXTURES[0]).read_bytes()
    assert fits_ok(good) == ''
    assert fits_ok(b'<html><body>busy</body></html>') == 'html'
    assert fits_ok(good[:len(good) // 2]) in ('truncated', 'not_fits')
    import warnings
    before = list(warnings.filters)
    assert fits_ok(good[:(len(good) // 2 // 2880) * 2880]) == 'truncated'   # cut exactly at a FITS block boundary
    assert warnings.filters == before          # the check leaves the process's warning filters alone (downloads run in threads)
    assert fits_ok(b'\x00' * 2880) == 'not_fits'


def test_faulty_server_every_spectrum_arrives_intact_or_is_reported(world, tmp_path):
    catalog, files = world
    cat = pd.concat([catalog, catalog.iloc[:5]])                       # duplicates
    ghost = catalog.iloc[:2].copy(); ghost['fiberID'] = [998, 999]; ghost['specObjID'] = ghost['specObjID'] + np.uint64(7)
    cat = pd.concat([cat, ghost])                                      # two spectra the server does not have
    with FakeSDSS(catalog, files, faults=dict(rate=0.2, hang=1.2, seed=1)) as srv:
        s = download(cat, tmp_path, workers=16, sas_url=srv.sas_url, timeout=0.6, retries=10, backoff=0.01, progress=False)
    assert set(srv.faults_served) == {'5xx', 'timeout', 'truncate', 'html'}
    assert s.unique == len(catalog) + 2 and s.downloaded == len(catalog) and s.failed == {'not_found': 2}
    assert s.retries > 0
    got = {p.relative_to(tmp_path / 'sas').as_posix(): p.read_bytes() for p in (tmp_path / 'sas').rglob('*.fits')}
    assert got == files                                               # byte-identical, nothing extra
    assert not list(tmp_path.rglob('*.part'))
    fails = pd.read_csv(tmp_path / 'download_failures.csv')
    assert sorted(fails.fiberID) == [998, 999] and set(fails.reason) == {'not_found'}
    # a second run fetches nothing
    with FakeSDSS(catalog, files) as srv2:
        s2 = download(cat, tmp_path, workers=4, sas_url=srv2.sas_url, timeout=2, retries=1, backoff=0.01, progress=False)
    assert s2.downloaded == 0 and s2.already_present == len(catalog)
    assert all(k.endswith(('998.fits', '999.fits')) for k in srv2.requests)


def test_404_is_not_retried():
    with FakeSDSS(files={}) as srv:
        body, reason, attempts = fetch(f'{srv.sas_url}/nope.fits', timeout=2, retries=5, backoff=0.01)
    assert body is None and reason == 'not_found' and attempts == 1 and srv.requests == {'/sas/nope.fits': 1}


SERVE = textwrap.dedent('''
    import sys, json, time, pandas as pd
    from pathlib import Path
    from spectral_nb.fakesdss import FakeSDSS
    d = Path(sys.argv[1])
    files = {p.relative_to(d / 'src').as_posix(): p.read_bytes() for p in (d / 'src').rglob('*.fits')}
    with FakeSDSS(files=files, faults=dict(latency=(0.05, 0.15), rate=0.1, hang=0.8, seed=5)) as srv:
        (d / 'url').write_text(srv.sas_url)
        time.sleep(600)
''')


def test_sigkill_and_restart_gives_the_same_files(world, tmp_path):
    catalog, files = world
    for rel, body in files.items():
        (tmp_path / 'src' / rel).parent.mkdir(parents=True, exist_ok=True); (tmp_path / 'src' / rel).write_bytes(body)
    catalog.to_parquet(tmp_path / 'catalog.parquet')
    server = subprocess.Popen([sys.executable, '-c', SERVE, str(tmp_path)])
    try:
        while not (tmp_path / 'url').exists(): time.sleep(0.1)
        url = (tmp_path / 'url').read_text()
        exe = Path(sys.executable).with_name('spectral-nb')
        cmd = [str(exe), '-q', 'download', '--catalog', str(tmp_path / 'catalog.parquet'), '--out', str(tmp_path / 'dl'),
               '--workers', '4', '--sas-url', url, '--timeout', '0.5', '--retries', '10']
        p = subprocess.Popen(cmd, start_new_session=True)
        t0 = time.time()
        while len(list((tmp_path / 'dl').rglob('*.fits'))) < 15:
            assert time.time() - t0 < 120 and p.poll() is None
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL); p.wait()
        partial = len(list((tmp_path / 'dl').rglob('*.fits')))
        assert partial < len(files)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out['already_present'] >= partial and out['downloaded'] + out['already_present'] == len(files)
    finally:
        server.kill()
    got = {p.relative_to(tmp_path / 'dl' / 'sas').as_posix(): p.read_bytes() for p in (tmp_path / 'dl' / 'sas').rglob('*.fits')}
    assert got == files
    assert not list((tmp_path / 'dl').rglob('*.part'))
    raw = pd.read_parquet(tmp_path / 'dl' / 'raw.parquet', columns=['specObjID', 'source'])
    assert raw.specObjID.is_unique and len(raw) == len(files) and set(raw.source) == {'sdss'}


def test_real_dr18_files_via_fake_server_keep_their_flux(tmp_path):
    files, rows = {}, []
    for p in FIXTURES:
        c, _ = read_sdss_spec(p)
        files[sas_path(c['plate'], c['mjd'], c['fiberID'], c['run2d'])] = Path(p).read_bytes()
        rows.append(c)
    with FakeSDSS(files=files, faults=dict(rate=0.3, hang=1.0, seed=2)) as srv:
        download(pd.DataFrame(rows), tmp_path, workers=2, sas_url=srv.sas_url, timeout=0.5, retries=10, backoff=0.01, progress=False)
    raw = to_records(pd.DataFrame(rows), tmp_path)
    preprocess(raw, tmp_path / 'via_server.h5', progress=False, seed=1)
    preprocess(None, tmp_path / 'direct.h5', fits_files=FIXTURES, progress=False, seed=1)
    a = pd.read_hdf(tmp_path / 'via_server.h5', 'source_info').set_index('specObjID')
    b = pd.read_hdf(tmp_path / 'direct.h5', 'source_info').set_index('specObjID')
    fa = pd.DataFrame(read_fluxes(tmp_path / 'via_server.h5'), index=a.index)
    fb = pd.DataFrame(read_fluxes(tmp_path / 'direct.h5'), index=b.index)
    assert fa.loc[fb.index].to_numpy().tobytes() == fb.to_numpy().tobytes()
    assert (a.loc[b.index, 'label_main'] == b['label_main']).all()


def test_cli_query_and_download(world, tmp_path):
    from spectral_nb.cli import main
    catalog, files = world
    with FakeSDSS(catalog, files) as srv:
        assert main(['-q', 'query', '--n', '12', '--balanced', '--skyserver-url', srv.url, '--out', str(tmp_path / 'c.parquet')]) == 0
        assert main(['-q', 'download', '--catalog', str(tmp_path / 'c.parquet'), '--out', str(tmp_path / 'dl'), '--sas-url', srv.sas_url]) == 0
    assert len(pd.read_parquet(tmp_path / 'dl' / 'raw.parquet', columns=['specObjID'])) == 12
    with FakeSDSS(catalog.iloc[:0]) as srv:
        assert main(['-q', 'query', '--n', '5', '--skyserver-url', srv.url, '--out', str(tmp_path / 'e.parquet')]) == 2


def test_reproduce_chain_with_source_sdss(world, tmp_path):
    "query -> download -> preprocess, as papermill stages, against the fake SDSS (base URLs are parameters)."
    from spectral_nb.reproduce import reproduce
    catalog, files = world
    with FakeSDSS(catalog, files, faults=dict(rate=0.1, hang=1.0, seed=4)) as srv:
        s = reproduce(tmp_path / 'run', 'smoke', 'sdss', stages=['query', 'download', 'preprocess'],
                      skyserver_url=srv.url, sas_url=srv.sas_url)
        again = reproduce(tmp_path / 'run', 'smoke', 'sdss', stages=['query', 'download', 'preprocess'],
                          skyserver_url=srv.url, sas_url=srv.sas_url)
    assert again['skipped'] == ['query', 'download', 'preprocess']
    info = pd.read_hdf(tmp_path / 'run' / 'data' / 'dataset.h5', 'source_info')
    assert len(info) >= 85 and set(info.source) == {'sdss'}
    m = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert m['source'] == 'sdss' and m['download']['downloaded'] == len(files)
    assert 'real SDSS' in (tmp_path / 'run' / 'index.md').read_text()
