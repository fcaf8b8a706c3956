"""Issue 10 (trustworthy results), preprocessing side: the dataset owns its scaler and summary, odd subclasses keep their
rows, damaged rows are skipped and named, unphysical values are refused, SIGTERM leaves no temporary file."""
import json, logging, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np, pandas as pd, pyarrow.parquet as pq, pytest
from spectral_nb import preprocess as pp
from spectral_nb.dataset import Dataset, check_dataset, dataset_hash, read_dataset_scaler, read_dataset_summary, read_fluxes
from spectral_nb.config import NPIX, DLOGLAM
from spectral_nb.config import sdss_loglam
from spectral_nb.records import RecordWriter, CATALOG_COLUMNS

EXE = Path(sys.executable).with_name('spectral-nb')


def write_records(path, cat, pix):
    "Raw records through the records module's writer (lists of 1-D arrays: rows may differ)."
    with RecordWriter(path) as w:
        w.write({k: cat[k].to_numpy() for k in CATALOG_COLUMNS}, pix)
    return path


def as_lists(pix):
    return {k: [np.array(r) for r in v] for k, v in pix.items()}


def synthetic(n: int = 40, seed: int = 11):
    "Raw records on the exact grid: smooth continua with noise, every catalogue column (independent of the mock module)."
    rng = np.random.default_rng(seed)
    cls = np.array(['GALAXY', 'QSO', 'STAR'] * (n // 3 + 1))[:n]
    sub = np.where(cls == 'GALAXY', 'STARFORMING', np.where(cls == 'STAR', 'K5', 'BROADLINE'))
    cat = pd.DataFrame(dict(specObjID=np.arange(1, n + 1, dtype='uint64') * 1000 + 7, plate=np.full(n, 300), mjd=np.full(n, 51666),
                            fiberID=np.arange(1, n + 1), run2d='26', ra=rng.uniform(0, 360, n), dec=rng.uniform(-5, 60, n),
                            subClass=sub, z=np.where(cls == 'STAR', 0.0, rng.uniform(0.05, 0.3, n)), zErr=np.full(n, 1e-4),
                            zWarning=np.zeros(n, int), source='mock', **{'class': cls},
                            **{f'petroMag_{b}': rng.uniform(16, 19, n) for b in 'ugriz'}, **{f'petroMagErr_{b}': np.full(n, 0.03) for b in 'ugriz'}))
    x = np.linspace(0, 1, NPIX)
    flux = (rng.uniform(5, 20, (n, 1)) * (1 + rng.uniform(-0.5, 0.5, (n, 1)) * x) + rng.normal(0, 0.5, (n, NPIX))).astype(np.float32)
    pix = dict(loglam=np.tile(sdss_loglam().astype(np.float32), (n, 1)), flux=flux, ivar=np.full((n, NPIX), 4.0, np.float32),
               and_mask=np.zeros((n, NPIX), np.int32))
    return cat, pix


@pytest.fixture(scope='module')
def survey():
    return synthetic()


# ---- item 2: the dataset owns its scaler and its summary ---------------------------------------------------------

def test_two_datasets_in_one_folder_keep_their_own_scaler_and_summary(tmp_path, survey):
    cat, pix = survey
    raw = write_records(tmp_path / 'raw.parquet', cat, pix)
    a = pp.preprocess(raw, tmp_path / 'a.h5', smoothing_px=0, progress=False)
    b = pp.preprocess(raw, tmp_path / 'b.h5', smoothing_px=4, progress=False)
    assert not (tmp_path / 'scaler.json').exists() and not (tmp_path / 'preprocess_summary.json').exists()
    sa, sb = read_dataset_scaler(tmp_path / 'a.h5'), read_dataset_scaler(tmp_path / 'b.h5')
    assert Dataset(tmp_path / 'a.h5').smoothing_px == 0 and Dataset(tmp_path / 'b.h5').smoothing_px == 4 and sa.flux_std != sb.flux_std
    # each file's scaler is the one fitted on that file's training rows
    for name, sc in (('a.h5', sa), ('b.h5', sb)):
        info = pd.read_hdf(tmp_path / name, 'source_info')
        train = read_fluxes(tmp_path / name)[(info.split == 'train').to_numpy()].astype(np.float64)
        np.testing.assert_allclose(sc.flux_mean, train.mean(0), rtol=1e-5, atol=1e-4)
    ma, mb = read_dataset_summary(tmp_path / 'a.h5'), read_dataset_summary(tmp_path / 'b.h5')
    assert (ma['sigma_applied'], mb['sigma_applied']) == (0.0, 4.0)
    assert ma['n_out'] == a.n_out and mb['n_out'] == b.n_out
    assert json.loads((tmp_path / 'b.summary.json').read_text())['sigma_applied'] == 4.0


def test_dataset_hash_is_a_content_hash(tmp_path, survey):
    cat, pix = survey
    raw = write_records(tmp_path / 'raw.parquet', cat, pix)
    pp.preprocess(raw, tmp_path / 'a.h5', progress=False)
    pp.preprocess(raw, tmp_path / 'b.h5', progress=False, seed=7)          # another split
    pp.preprocess(raw, tmp_path / 'c.h5', progress=False, smoothing_px=2)         # other fluxes
    import shutil
    (tmp_path / 'copy').mkdir(); shutil.copy(tmp_path / 'a.h5', tmp_path / 'copy' / 'x.h5')
    h = dataset_hash(tmp_path / 'a.h5')
    assert len(h) == 64 and h == dataset_hash(tmp_path / 'copy' / 'x.h5')
    assert len({h, dataset_hash(tmp_path / 'b.h5'), dataset_hash(tmp_path / 'c.h5')}) == 3


def test_check_dataset_refuses_what_is_not_a_dataset(tmp_path):
    (tmp_path / 'junk.h5').write_bytes(b'\x00junk' * 100)
    pd.DataFrame({'a': [1, 2]}).to_hdf(tmp_path / 'other.h5', key='fluxes')
    with pytest.raises(ValueError, match='not an HDF5 file'): check_dataset(tmp_path / 'junk.h5')
    with pytest.raises(ValueError, match='not a .*spectral_nb dataset'): check_dataset(tmp_path / 'other.h5')
    with pytest.raises(ValueError, match='is a folder'): check_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match='spectral-nb preprocess'): check_dataset(tmp_path / 'none.h5')


# ---- item 5: real SDSS subclasses keep their rows ----------------------------------------------------------------

def test_real_sdss_subclasses_are_grouped_not_dropped(tmp_path, survey):
    cat, pix = survey
    cat = cat.copy()
    odd = ['G5', 'L5', 'M0.5', 'K0III', 'F5V (HD 1)', 'B3', 'WDcooler', 'Zzz']
    stars = np.arange(len(odd))                      # labelled stars (only the labels matter here)
    cat.loc[stars, 'class'] = 'STAR'; cat.loc[stars, 'subClass'] = odd; cat.loc[stars, 'z'] = 0.0
    gals = np.flatnonzero(cat['class'] == 'GALAXY')
    cat.loc[gals[0], 'subClass'] = 'NOT_A_SUBCLASS'
    raw = write_records(tmp_path / 'raw.parquet', cat, pix)
    s = pp.preprocess(raw, tmp_path / 'd.h5', max_missing=1.0, progress=False)
    assert s.n_out == s.n_in == len(cat) and not s.dropped
    info = pd.read_hdf(tmp_path / 'd.h5', 'source_info').set_index('specObjID')
    got = info.loc[cat.specObjID[stars[:len(odd)]].to_numpy(), 'label_star'].tolist()
    assert got == ['G', 'L', 'M', 'K', 'F', 'B', 'WD', '']
    assert info.loc[cat.specObjID[gals[0]], 'label_galaxy'] == '' and info.loc[cat.specObjID[gals[0]], 'label_main'] == 'GALAXY'
    assert s.unlabelled == {'galaxy': 1, 'star': 1}


# ---- items 6 and 9: damaged rows are skipped, counted and named ---------------------------------------------------

def damaged(tmp_path, survey):
    cat, pix = survey
    cat = cat.copy(); p = as_lists(pix)
    ll = p['loglam']
    ll[0] = ll[0].copy(); ll[0][100] = np.nan                                   # NaN loglam
    ll[1] = ll[1][::-1].copy()                                                  # reversed loglam
    h = len(ll[2]) // 2; ll[2] = np.concatenate([ll[2][h:], ll[2][:h]])         # swapped loglam blocks
    p['ivar'][3] = np.zeros(0, np.float32)                                      # a missing (empty) pixel array
    cat.loc[4, 'z'] = -5.0                                                      # unphysical redshifts
    cat.loc[5, 'z'] = 42.0
    return write_records(tmp_path / 'raw.parquet', cat, p), cat


def test_damaged_rows_are_skipped_counted_and_named(tmp_path, survey, caplog):
    raw, cat = damaged(tmp_path, survey)
    with caplog.at_level(logging.WARNING, logger='spectral_nb.preprocess'):
        s = pp.preprocess(raw, tmp_path / 'd.h5', max_missing=1.0, progress=False)
    assert s.dropped == {'bad_loglam': 3, 'bad_pixel_arrays': 1, 'bad_z': 2}
    assert s.n_out == len(cat) - 6 and s.n_in == len(cat)
    ids = cat.specObjID.astype(int).tolist()
    assert sorted(s.dropped_ids['bad_loglam']) == sorted(ids[:3]) and s.dropped_ids['bad_pixel_arrays'] == [ids[3]]
    assert sorted(s.dropped_ids['bad_z']) == sorted(ids[4:6])
    assert all(str(i) in caplog.text for i in ids[:6])
    assert read_dataset_summary(tmp_path / 'd.h5')['dropped'] == s.dropped
    info = pd.read_hdf(tmp_path / 'd.h5', 'source_info')
    assert not set(ids[:6]) & set(info.specObjID.astype(int)) and (info.z > -0.01).all()


def test_cli_survives_damaged_rows_and_reports_them(tmp_path, survey):
    raw, cat = damaged(tmp_path, survey)
    r = subprocess.run([str(EXE), '-q', 'preprocess', '--raw', str(raw), '--out', str(tmp_path / 'd.h5'), '--max-missing', '1'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])['dropped'] == {'bad_loglam': 3, 'bad_pixel_arrays': 1, 'bad_z': 2}


def test_a_raw_file_without_a_needed_column_is_refused_before_work(tmp_path, survey):
    cat, pix = survey
    raw = write_records(tmp_path / 'raw.parquet', cat, pix)
    pq.write_table(pq.read_table(raw).drop(['z']), tmp_path / 'noz.parquet')
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['z'\]"):
        pp.preprocess(tmp_path / 'noz.parquet', tmp_path / 'd.h5', progress=False)
    assert not list(tmp_path.glob('*.h5')) and not list(tmp_path.glob('.d.h5*'))


# ---- item 9: SIGTERM and killed writers leave no temporary file ---------------------------------------------------

SLOW = textwrap.dedent('''
    import sys, time
    from spectral_nb import preprocess as pp
    real = pp.process_chunk
    def slow(*a, **k):
        time.sleep(0.3); return real(*a, **k)
    pp.process_chunk = slow
    pp.preprocess(sys.argv[1], sys.argv[2], batch_size=4, progress=False)
''')


def test_sigterm_during_the_write_leaves_no_temporary_file(tmp_path, survey):
    cat, pix = survey
    raw = write_records(tmp_path / 'raw.parquet', cat, pix)
    out = tmp_path / 'ds' / 'dataset.h5'
    p = subprocess.Popen([sys.executable, '-c', SLOW, str(raw), str(out)])
    t0 = time.time()
    while not (out.parent.exists() and list(out.parent.glob('.dataset.h5.*.tmp'))):
        assert time.time() - t0 < 120 and p.poll() is None
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) != 0
    assert not out.exists() and not list(out.parent.glob('.dataset.h5.*'))


def test_temporary_files_of_dead_writers_are_removed(tmp_path, survey):
    cat, pix = survey
    raw = write_records(tmp_path / 'raw.parquet', cat.iloc[:12].reset_index(drop=True), {k: v[:12] for k, v in pix.items()})
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f'.d.h5.{dead}.0123abcd.tmp'; stale.write_bytes(b'half a dataset')
    mine = tmp_path / f'.d.h5.{os.getpid()}.4567abcd.tmp'; mine.write_bytes(b'a live writer')
    pp.preprocess(raw, tmp_path / 'd.h5', max_missing=1.0, progress=False)
    assert not stale.exists() and mine.exists()
