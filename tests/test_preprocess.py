"Preprocessing: real SDSS files, the EW formula, bad input, determinism, the split and the scaler."
import glob, json, shutil
from pathlib import Path
import numpy as np, pandas as pd, pytest
import ppxf
from astropy.io import fits
from spectral_nb import preprocess as pp
from spectral_nb.dataset import read_dataset_scaler, read_dataset_summary, read_fluxes, read_info, Scaler
from spectral_nb.sdssfiles import BadSpectrumError, read_sdss_spec, read_spzline
from spectral_nb.spectra import equivalent_widths, on_common_grid, to_grid
from spectral_nb.config import EW_LINES, NPIX, LOGLAM0, DLOGLAM, sdss_loglam
from spectral_nb.mock import generate, generate_chunk, MockConfig
from spectral_nb.records import RecordWriter, read_records, count_records, CATALOG_COLUMNS

FIXTURES = sorted(glob.glob(str(Path(ppxf.__file__).parent / 'spectra' / '*_SDSS_DR18.fits')))


@pytest.fixture(scope='module')
def raw(mock_dataset):
    return mock_dataset(2500, 3)[0]


@pytest.fixture(scope='module')
def dataset(mock_dataset):
    "The dataset of `raw` and its preprocessing summary (as the file stores it)."
    h5 = mock_dataset(2500, 3)[1]
    return h5, read_dataset_summary(h5)


def test_fixtures_present():
    assert len(FIXTURES) == 2


@pytest.mark.parametrize('path', FIXTURES)
def test_real_sdss_spectrum_lands_on_the_grid_unchanged(path):
    cat, pix = read_sdss_spec(path)
    off = on_common_grid(pix['loglam'])
    assert off is not None and off < 0                     # the file starts blueward of 3,850 A
    f, iv, m, resampled = to_grid(pix['loglam'], pix['flux'], pix['ivar'], pix['and_mask'])
    assert not resampled and f.shape == (NPIX,)
    np.testing.assert_array_equal(f, pix['flux'][-off:-off + NPIX])
    np.testing.assert_allclose(pix['loglam'][-off:-off + NPIX], sdss_loglam(), atol=2e-6)


@pytest.mark.parametrize('path', FIXTURES)
def test_resampled_real_spectrum_matches_within_interpolation_error(path):
    _, pix = read_sdss_spec(path)
    shift = DLOGLAM / 3
    f, iv, m, resampled = to_grid(pix['loglam'] + shift, pix['flux'], pix['ivar'], pix['and_mask'])
    assert resampled
    # the shifted spectrum, evaluated back at the original pixel centres, is the original within interpolation error
    ref = np.interp(sdss_loglam(), pix['loglam'] + shift, pix['flux'])
    good = iv > 0
    resid = (f - ref)[good]
    noise = 1 / np.sqrt(iv[good])
    assert good.mean() > 0.99
    assert np.median(np.abs(resid) / noise) < 0.5           # differences well below the pixel noise
    # flux is conserved over broad bands
    wl = 10 ** sdss_loglam()
    dl = wl * np.log(10) * DLOGLAM
    band = (wl > 5000) & (wl < 6000)
    orig_wl = 10 ** (pix['loglam'] + shift); orig_dl = orig_wl * np.log(10) * DLOGLAM
    ob = (orig_wl > wl[band][0] - dl[band][0] / 2) & (orig_wl < wl[band][-1] + dl[band][-1] / 2)
    assert abs((f[band] * dl[band]).sum() / (pix['flux'][ob] * orig_dl[ob]).sum() - 1) < 2e-3
    # ivar is propagated: same order as the input's
    assert 0.3 < np.median(iv[good]) / np.median(pix['ivar'][pix['ivar'] > 0]) < 3


def _ews(path, continuum=None):
    cat, pix = read_sdss_spec(path)
    f, iv, m, _ = to_grid(pix['loglam'], pix['flux'], pix['ivar'], pix['and_mask'])
    c = None
    if continuum is not None:
        model = fits.open(path)['COADD'].data['model']
        c = to_grid(pix['loglam'], model, np.ones_like(model), np.zeros(len(model), int))[0][None]
    ew, err = equivalent_widths(f[None], iv[None], np.array([cat['z']]), continuum=c)
    spz = read_spzline(path).set_index('LINENAME')
    return dict(zip(EW_LINES, ew[0])), dict(zip(EW_LINES, err[0])), spz


SPZ = {'Ha': 'H_alpha', 'Hb': 'H_beta', '[OIII]5007': '[O_III] 5007', '[NII]6584': '[N_II] 6583', '[SII]6717': '[S_II] 6716'}


@pytest.mark.parametrize('path', FIXTURES)
def test_forbidden_line_ews_agree_with_spzline_in_sign_and_magnitude(path):
    "Thesis EWs (local continuum, emission < 0) against SPZLINE (emission > 0): forbidden lines have no stellar absorption."
    ew, err, spz = _ews(path)
    for line in ('[OIII]5007', '[NII]6584'):
        theirs = -spz.loc[SPZ[line], 'LINEEW']
        assert np.sign(ew[line]) == np.sign(theirs) == -1, (line, ew[line], theirs)
        assert abs(np.log10(ew[line] / theirs)) < 1, (line, ew[line], theirs)   # same order of magnitude


def test_ha_agrees_with_spzline_where_emission_dominates():
    ew, err, spz = _ews(FIXTURES[0])     # NGC 3073: strong H-alpha emission
    theirs = -spz.loc['H_alpha', 'LINEEW']
    assert np.sign(ew['Ha']) == np.sign(theirs) and abs(np.log10(ew['Ha'] / theirs)) < 1


def test_ew_formula_reproduces_spzline_given_the_sdss_continuum():
    "With SDSS's own stellar-continuum model as F_c (NGC 3073's model excludes the lines), our EWs match SPZLINE's."
    ew, err, spz = _ews(FIXTURES[0], continuum=True)
    for line, tol in (('Ha', 0.15), ('[NII]6584', 0.15), ('[SII]6717', 0.15), ('[OIII]5007', 0.45)):
        theirs = -spz.loc[SPZ[line], 'LINEEW']
        assert abs(ew[line] - theirs) < tol * abs(theirs) + 2 * err[line], (line, ew[line], theirs)


def test_mock_ews_recover_the_noiseless_ews_within_noise():
    "EWs measured on noisy galaxy spectra scatter about those of the same galaxies' noiseless spectra by about their errors."
    rng = np.random.default_rng(21)
    n = 400
    sub = np.array(['STARFORMING'] * 200 + ['STARBURST'] * 100 + ['AGN'] * 100, dtype=object)
    cat, pix, models = generate_chunk(np.array(['GALAXY'] * n), sub, rng, MockConfig().validate(), return_models=True)
    z = np.asarray(cat['true_z'])
    ew, err = equivalent_widths(pix['flux'], pix['ivar'], z)
    ew0, _ = equivalent_widths(models['model'].astype(np.float32), pix['ivar'], z)
    for line in ('[OIII]5007', '[OIII]4959', '[SII]6717', '[SII]6731', '[OII]3727', 'Ha', 'Hb'):
        j = EW_LINES.index(line)
        # the extreme starbursts (EW(H-alpha) > 250 A) left out: their errors are dominated by where the continuum is put,
        # which the EW error (pixel noise only) does not count
        ordinary = np.asarray(cat['true_ew_Ha']) > -250
        ok = np.isfinite(ew[:, j]) & np.isfinite(ew0[:, j]) & (err[:, j] > 0) & (np.asarray(cat['true_sn_median']) > 3) & ordinary
        pull = (ew[ok, j] - ew0[ok, j]) / err[ok, j]
        assert ok.sum() > 100, line
        assert abs(np.median(pull)) < 0.3 and 0.6 < np.std(pull[np.abs(pull) < 6]) < 1.6, (line, np.median(pull), np.std(pull))


def test_dataset_has_the_thesis_tables_and_slices(dataset, raw):
    out, summ = dataset
    fl = pd.read_hdf(out, 'fluxes', start=10, stop=20)
    assert fl.shape == (10, NPIX) and fl.dtypes.iloc[0] == np.float32
    np.testing.assert_array_equal(read_fluxes(out, 10, 20), fl.to_numpy())
    wl = pd.read_hdf(out, 'wavelengths')
    assert len(wl) == NPIX and abs(wl.wavelength.iloc[0] - 3850.34) < 0.01
    info = pd.read_hdf(out, 'source_info')
    assert len(info) == summ['n_out'] == len(pd.read_hdf(out, 'fluxes'))
    for c in ('specObjID', 'label_main', 'label_galaxy', 'label_star', 'z', 'zErr', 'petroMag_r', 'petroMagErr_z', 'EW_Ha', 'sn_median', 'split'):
        assert c in info
    assert summ['n_in'] == count_records(raw) > 2300 and summ['n_out'] + sum(summ['dropped'].values()) == summ['n_in']   # 2,500 targets less zWarning != 0
    assert 0.004 < summ['dropped'].get('missing_flux', 0) / summ['n_in'] < 0.02   # the ~1% with missing blocks


def test_split_is_stratified_and_deterministic(dataset, raw, tmp_path):
    out, _ = dataset
    info = pd.read_hdf(out, 'source_info')
    frac = info.groupby('label_main').split.value_counts(normalize=True).unstack()
    assert (abs(frac['test'] - 0.2) < 0.01).all() and (abs(frac['val'] - 0.16) < 0.01).all()
    # the split of a source depends on the seed and its specObjID, not on the input order
    again = pp.stratified_split(info.sample(frac=1, random_state=1), seed=42)
    assert (pd.Series(again, index=info.sample(frac=1, random_state=1).index).sort_index().to_numpy() == info.split.to_numpy()).all()
    assert (pp.stratified_split(info, seed=43) != info.split.to_numpy()).any()


def test_rerun_gives_byte_identical_fluxes(raw, dataset, tmp_path):
    out, _ = dataset
    pp.preprocess(raw, tmp_path / 'again.h5', progress=False)
    assert read_fluxes(out).tobytes() == read_fluxes(tmp_path / 'again.h5').tobytes()
    pd.testing.assert_frame_equal(pd.read_hdf(out, 'source_info'), pd.read_hdf(tmp_path / 'again.h5', 'source_info'))


def test_scaler_is_fitted_on_train_only_and_round_trips(dataset):
    out, _ = dataset
    info = pd.read_hdf(out, 'source_info')
    fl = read_fluxes(out)
    sc = read_dataset_scaler(out)
    assert Scaler.load(out.with_name('dataset.scaler.json')) == sc
    train = fl[(info.split == 'train').to_numpy()].astype(np.float64)
    np.testing.assert_allclose(sc.flux_mean, train.mean(0), rtol=1e-5, atol=1e-4)
    assert not np.allclose(sc.flux_mean, fl.astype(np.float64).mean(0), rtol=1e-6)
    z = sc.transform_flux(fl[(info.split == 'train').to_numpy()])
    assert abs(z.mean()) < 1e-3 and abs(z.std() - 1) < 0.05
    with pytest.raises(ValueError, match='pixels'):
        sc.transform_flux(fl[:, :100])
    with pytest.raises(ValueError, match='missing'):
        sc.transform_features(info.drop(columns=['EW_Ha']), pp.FEATURE_COLUMNS)
    assert 'pickle' not in out.with_name('dataset.scaler.json').read_text()[:20]


def test_smoothing_changes_fluxes_not_labels(raw, dataset, tmp_path):
    out, _ = dataset
    pp.preprocess(raw, tmp_path / 's4.h5', smoothing_px=4, progress=False)
    a, b = read_fluxes(out, 0, 50), read_fluxes(tmp_path / 's4.h5', 0, 50)
    assert np.std(np.diff(b, axis=1)) < 0.5 * np.std(np.diff(a, axis=1))
    pd.testing.assert_series_equal(pd.read_hdf(out, 'source_info').label_main, pd.read_hdf(tmp_path / 's4.h5', 'source_info').label_main)


# ---- bad input -------------------------------------------------------------------------------------------------

def test_corrupt_and_truncated_fits_are_named_errors(tmp_path):
    junk = tmp_path / 'spec-junk.fits'; junk.write_bytes(b'<html>503 Service Unavailable</html>')
    trunc = tmp_path / 'spec-trunc.fits'; trunc.write_bytes(Path(FIXTURES[0]).read_bytes()[:20000])
    for p in (junk, trunc):
        with pytest.raises(BadSpectrumError, match=p.name):
            read_sdss_spec(p)


def test_corrupt_fits_is_skipped_and_counted(tmp_path):
    junk = tmp_path / 'spec-junk.fits'; junk.write_bytes(b'\x00' * 100)
    copy = tmp_path / 'b.fits'; shutil.copy(FIXTURES[1], copy)
    s = pp.preprocess(None, tmp_path / 'ds.h5', fits_files=[FIXTURES[0], junk, copy], progress=False)
    # the two real files share nothing; the copy duplicates neither (different specObjID from FIXTURES[0])
    assert s.dropped == {'corrupt_fits': 1} and s.n_out == 2 and s.n_in == 3
    info = pd.read_hdf(tmp_path / 'ds.h5', 'source_info')
    assert set(info.source) == {'sdss'} and set(info.label_main) == {'STAR', 'GALAXY'}


def _bad_records(tmp_path):
    cat, pix = generate(12, seed=1, cfg=MockConfig(drop_zwarning=False))
    cat = cat.copy(); f = pix['flux'].copy(); ll = pix['loglam'].astype(np.float64).copy()
    f[0] = np.nan                                  # all-NaN flux
    cat.loc[1, 'class'] = 'PLANET'                 # unknown label
    cat.loc[2, 'z'] = np.nan                       # NaN redshift
    ll_list = [l for l in ll]; flux_list = [x for x in f]
    ll_list[3] = np.log10(10000.0) + DLOGLAM * np.arange(NPIX)   # misses the grid entirely (10,000 A and redward)
    pix2 = {'loglam': ll_list, 'flux': flux_list, 'ivar': list(pix['ivar']), 'and_mask': list(pix['and_mask'])}
    path = tmp_path / 'bad' / 'raw.parquet'
    extra = {k: __import__('pyarrow').float64() for k in []}
    with RecordWriter(path) as w:
        w.write({k: cat[k].to_numpy() for k in CATALOG_COLUMNS}, pix2)
    return path


def test_bad_records_are_skipped_with_counts(tmp_path):
    path = _bad_records(tmp_path)
    s = pp.preprocess(path, tmp_path / 'ds.h5', max_missing=0.5, progress=False)
    assert s.dropped.get('no_good_flux') == 1 and s.dropped.get('unknown_class') == 1
    assert s.dropped.get('z_nan') == 1 and s.dropped.get('off_grid') == 1
    assert s.n_out == 8 and s.n_out + sum(s.dropped.values()) == s.n_in == 12
    info = pd.read_hdf(tmp_path / 'ds.h5', 'source_info')
    assert info.z.notna().all() and info.label_main.isin(['GALAXY', 'QSO', 'STAR']).all()
    assert read_dataset_summary(tmp_path / 'ds.h5')['dropped'] == s.dropped
    assert json.loads((tmp_path / 'ds.summary.json').read_text())['dropped'] == s.dropped


def test_bad_records_raise_when_asked_and_keep_the_old_dataset(tmp_path, raw):
    good = pp.preprocess(raw, tmp_path / 'ds.h5', progress=False)
    before = (tmp_path / 'ds.h5').read_bytes()
    path = _bad_records(tmp_path)
    with pytest.raises(BadSpectrumError, match='cannot be used'):
        pp.preprocess(path, tmp_path / 'ds.h5', on_bad='raise', progress=False)
    assert (tmp_path / 'ds.h5').read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


@pytest.mark.parametrize('kw,msg', [(dict(smoothing_px=-1), 'sigma'), (dict(max_missing=2), 'max_missing'), (dict(on_bad='ignore'), 'on_bad')])
def test_bad_parameters_are_refused(tmp_path, raw, kw, msg):
    with pytest.raises(ValueError, match=msg):
        pp.preprocess(raw, tmp_path / 'ds.h5', progress=False, **kw)
    assert not (tmp_path / 'ds.h5').exists()


def test_cli_preprocess(tmp_path, raw, capsys):
    from spectral_nb.cli import main
    assert main(['-q', 'preprocess', '--raw', str(raw), '--out', str(tmp_path / 'd.h5'), '--fits', FIXTURES[0]]) == 0
    info = pd.read_hdf(tmp_path / 'd.h5', 'source_info')
    assert set(info.source) == {'mock', 'sdss'}
    assert main(['-q', 'preprocess', '--raw', str(tmp_path / 'nope.parquet'), '--out', str(tmp_path / 'e.h5')]) == 2
    assert 'No raw-record file' in capsys.readouterr().err


@pytest.mark.parametrize('block,batch,rows', [(16, 7, None), (64, 64, range(5, 300)), (100, 33, range(2400, 9999)), (16, 5, range(40, 40))])
def test_prediction_chunks_cross_info_blocks_unchanged(dataset, monkeypatch, block, batch, rows):
    "predict's reader (`chunks_h5`): every row once, in order, its fluxes and source_info as read directly, whatever the block, chunk and row range."
    from spectral_nb import predict as PR
    h5, _ = dataset
    monkeypatch.setattr(PR, 'INFO_BLOCK', block)
    cols = ['specObjID', 'split', 'z', 'flux_scale']
    got = list(PR.chunks_h5(h5, batch, rows, cols))
    n = len(read_info(h5, columns=['z']))
    a, b = (0, n) if rows is None else (rows.start, min(rows.stop, n))
    if b <= a: assert got == []; return
    assert all(len(i) <= batch and len(i) == len(f) for i, f, _ in got)
    np.testing.assert_array_equal(np.concatenate([f for _, f, _ in got]), read_fluxes(h5, a, b))
    pd.testing.assert_frame_equal(pd.concat([i for i, _, _ in got], ignore_index=True), read_info(h5, a, b, cols).reset_index(drop=True))
