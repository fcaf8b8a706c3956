"A user's own spectra: every SDSS file flavour in, a catalogue out in three formats, every input row accounted for."
import glob, logging
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from spectral_nb.catalog import ZW, read_table, zwarning_names
from spectral_nb.predict import predict
from spectral_nb.sdssfiles import read_sdss_spec

SPEC_FILES = sorted(glob.glob(str(Path(resources.files('ppxf')) / 'spectra' / '*_SDSS_DR18.fits')))
SPPLATE = Path(resources.files('pydl')) / 'pydlspec2d' / 'tests' / 't' / 'spPlate-4055-55359-0020.fits'


@pytest.fixture(scope='module')
def model(demo_run):
    return demo_run / 'cnn' / 'models' / 'cnn_compact'


@pytest.fixture(scope='module')
def sdss_files(tmp_path_factory):
    "A folder with every flavour: two spec files (DR18), a DR7-format spSpec file made from one of them, a spPlate file."
    d = tmp_path_factory.mktemp('sdss')
    for i, f in enumerate(SPEC_FILES):
        (d / f'spec-{i:04d}-55000-{i + 1:04d}.fits').write_bytes(Path(f).read_bytes())
    c, x = read_sdss_spec(SPEC_FILES[0])
    rows = np.zeros((5, len(x['flux'])))
    ok = x['ivar'] > 0
    rows[0], rows[3] = x['flux'], x['and_mask']
    rows[2][ok] = 1 / np.sqrt(x['ivar'][ok])
    hdr = fits.Header(dict(COEFF0=x['loglam'][0], COEFF1=1e-4, PLATEID=266, MJD=51602, FIBERID=9, Z=c['z'], SPEC_CLN=2))
    fits.PrimaryHDU(rows, hdr).writeto(d / 'spSpec-51602-0266-009.fit')
    (d / SPPLATE.name).write_bytes(SPPLATE.read_bytes())
    return d


def test_every_fits_flavour_is_read_and_predicted(model, sdss_files):
    with fits.open(sdss_files / SPPLATE.name) as h:
        n_fibres = h[0].header['NAXIS2']
    df = predict(model, sdss_files, progress=False)
    assert len(df) == len(SPEC_FILES) + 1 + n_fibres  # every spectrum of every file: a row each
    assert set(df.loc[df['ZWARNING'] & (ZW['NODATA'] | ZW['BAD_INPUT']) == 0, 'CLASS']) <= {'GALAXY', 'QSO', 'STAR'}
    plate = df[df['plate'] == 4055]
    assert len(plate) == n_fibres and plate['specObjID'].is_unique  # fibres get SDSS's own specObjIDs
    # a glob and a list of files give the same catalogue as the folder
    by_glob = predict(model, str(sdss_files / 'spec-*.fits'), progress=False)
    assert len(by_glob) == len(SPEC_FILES)
    by_list = predict(model, sorted(sdss_files.glob('spec-*.fits')), progress=False)
    pd.testing.assert_frame_equal(by_glob, by_list)


@pytest.mark.parametrize('ext', ['csv', 'parquet', 'fits'])
def test_catalogue_round_trips_in_each_format(model, sdss_files, tmp_path, ext):
    df = predict(model, sdss_files, out=tmp_path / f'cat.{ext}', progress=False)
    back = read_table(tmp_path / f'cat.{ext}')
    assert len(back) == len(df)
    for c in ('CLASS', 'ZWARNING', 'PROB_GALAXY', 'PROB_QSO', 'PROB_STAR', 'specObjID'):
        assert c in back, c
    assert back['specObjID'].astype('uint64').tolist() == df['specObjID'].astype('uint64').tolist()
    assert list(back['CLASS'].fillna('').astype(str)) == list(df['CLASS'].astype(str))
    np.testing.assert_allclose(back['PROB_QSO'].to_numpy(float), df['PROB_QSO'].to_numpy(float))
    if ext == 'fits':
        from astropy.table import Table

        assert Table.read(tmp_path / 'cat.fits').meta['ORIGIN'] == 'spectral_nb'


def test_broken_rows_keep_their_place_in_the_catalogue(model, demo_run, tmp_path, caplog):
    "60 raw records, three broken (+inf pixels, x1e30, all zero), one damaged file-free record and a duplicate id: one output row per input row."
    from spectral_nb.records import read_records, RecordWriter, CATALOG_COLUMNS

    cat, pix = read_records(demo_run / 'data' / 'raw.parquet')
    cat = cat.iloc[:60][[c for c in CATALOG_COLUMNS if c in cat]].reset_index(drop=True)
    pix = {k: np.array(np.stack(list(v[:60]))) for k, v in pix.items()}
    pix['flux'][0] = np.full_like(pix['flux'][0], np.inf)
    pix['flux'][1] = pix['flux'][1] * 1e30
    pix['flux'][2] = np.zeros_like(pix['flux'][2])
    pix['ivar'][2] = np.zeros_like(pix['ivar'][2])
    cat.loc[3, 'specObjID'] = cat.loc[4, 'specObjID']  # a duplicate id
    raw = tmp_path / 'broken.parquet'
    with RecordWriter(raw) as w:
        w.write(cat, pix)
    with caplog.at_level(logging.WARNING, logger='spectral_nb.predict'):
        df = predict(model, raw, out=tmp_path / 'cat.fits', progress=False)
    assert len(df) == 60
    no_answer = df[(df['ZWARNING'] & (ZW['NODATA'] | ZW['BAD_INPUT'])) != 0]
    assert set(no_answer['DROPPED']) <= {'no_good_flux', 'off_grid', 'missing_flux', 'bad_pixel_arrays'}
    assert cat.loc[0, 'specObjID'] in set(no_answer['specObjID']) and cat.loc[2, 'specObjID'] in set(no_answer['specObjID'])
    assert (no_answer['CLASS'] == '').all()
    assert df.loc[df['specObjID'] == cat.loc[1, 'specObjID'], 'CLASS'].iloc[0] in ('GALAXY', 'QSO', 'STAR')  # x1e30 is fine
    dup = df[df['specObjID'] == cat.loc[4, 'specObjID']]
    assert len(dup) == 2 and all('DUPLICATE_ID' in zwarning_names(v) for v in dup['ZWARNING'])
    assert any('share a specObjID' in r.getMessage() for r in caplog.records)
    assert len(read_table(tmp_path / 'cat.fits')) == 60


def test_a_corrupt_file_is_named_not_lost(model, sdss_files, tmp_path):
    d = tmp_path / 'mixed'
    d.mkdir()
    (d / 'spec-0001-55000-0001.fits').write_bytes(Path(SPEC_FILES[0]).read_bytes())
    (d / 'spec-0002-55000-0002.fits').write_bytes(Path(SPEC_FILES[1]).read_bytes()[:5000])  # truncated download
    df = predict(model, d, progress=False)
    assert len(df) == 2
    bad = df[df['DROPPED'] == 'corrupt_fits']
    assert len(bad) == 1 and bad['filename'].iloc[0].endswith('spec-0002-55000-0002.fits')
    assert 'BAD_INPUT' in zwarning_names(bad['ZWARNING'].iloc[0])


def test_truncated_model_file_says_so(model, tmp_path, sdss_files):
    import shutil

    broken = tmp_path / 'broken_model'
    shutil.copytree(model, broken)
    data = (broken / 'model.keras').read_bytes()
    (broken / 'model.keras').write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match='damaged or truncated'):
        predict(broken, sdss_files, progress=False)


def test_noise_only_spectra_are_flagged(model, tmp_path):
    "200 spectra of no source (`real_sdss.noise_records`: Gaussian noise on the SDSS grid, half on a small offset): at least 95% carry LOW_SN (or no answer)."
    from spectral_nb.real_sdss import noise_records

    df = predict(model, noise_records(tmp_path / 'noise.parquet', n=200, seed=0), progress=False)
    assert len(df) == 200
    flagged = (df['ZWARNING'] & (ZW['LOW_SN'] | ZW['NODATA'] | ZW['BAD_INPUT'])) > 0
    assert flagged.mean() >= 0.95, flagged.mean()


def test_cli_stderr_carries_no_tensorflow_chatter(sdss_files, tmp_path):
    "`spectral-nb predict` with the pretrained model on SDSS files: a catalogue, and on stderr only what is ours."
    import subprocess, sys

    exe = Path(sys.executable).parent / 'spectral-nb'
    r = subprocess.run([str(exe), 'predict', '--data', str(sdss_files), '--out', str(tmp_path / 'cat.fits')],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for noise in ('oneDNN', 'absl', 'I0000', 'node_def', 'cuda', 'TF_ENABLE'):
        assert noise not in r.stderr, (noise, r.stderr[-1500:])
    assert 'wrote' in r.stderr   # our own log line stays
    cat = read_table(tmp_path / 'cat.fits')
    assert {'CLASS', 'Z', 'Z_ERR', 'ZWARNING'} <= set(cat.columns) and len(cat) > 20


def test_specutils_spectra_from_its_own_sdss_loader_classify_as_the_files_do(tmp_path):
    "Real SDSS spectra written as spec files, read back by specutils' SDSS-III/IV loader: `classify(spectra=...)` gives the answers `classify(data=files)` gives."
    specutils = pytest.importorskip('specutils')   # a dev requirement: installed by `make test`
    from spectral_nb.classify import classify
    from spectral_nb.real_sdss import load_real_dev, write_real_dev_fits
    cat, pix = load_real_dev()
    pick = [int(i) for i in np.flatnonzero(cat['class'].isin(['GALAXY', 'QSO', 'STAR']).to_numpy())[::12][:12]]
    files = write_real_dev_fits(tmp_path / 'spec', cat.iloc[pick].reset_index(drop=True), {k: [v[i] for i in pick] for k, v in pix.items()})
    spectra = [specutils.Spectrum.read(f, format='SDSS-III/IV spec') for f in files]
    a = classify(spectra=spectra, redshift_model=False)
    b = classify(data=[str(f) for f in files], redshift_model=False)
    assert len(a) == len(b) == len(files)
    np.testing.assert_array_equal(a['CLASS'].to_numpy(), b['CLASS'].to_numpy())
    np.testing.assert_allclose(a['PROB_QSO'].to_numpy(float), b['PROB_QSO'].to_numpy(float), atol=2e-3)


def test_explore_takes_sdss_files_or_a_run_and_says_so_when_given_neither(tmp_path):
    "`spectral-nb explore --data FILES` is accepted by the parser; with neither --run nor --data: exit 2 and one line naming both."
    import subprocess, sys
    from spectral_nb.cli_parser import build_parser
    a = build_parser().parse_args(['explore', '--data', 'a/spec-1.fits', "b/spec-*.fits", '--port', '8999'])
    assert a.run is None and a.data == ['a/spec-1.fits', 'b/spec-*.fits'] and a.port == 8999
    exe = Path(sys.executable).parent / 'spectral-nb'
    r = subprocess.run([str(exe), 'explore'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and '--run' in r.stderr and '--data' in r.stderr, r.stderr
