"The mock survey must behave like SDSS in the ways the models can exploit (MOCK_SURVEY.md)."
import os, stat
import numpy as np, pandas as pd, pytest
from spectral_nb import mock, mock_templates, libraries
from spectral_nb.config import (CLASS_MIX_STATED, GALAXY_SUBCLASS_MIX, STAR_GROUP_MIX, STAR_SUBCLASS_GROUP, LINES,
                                sdss_wavelength, WIDE_OFFSET, NPIX, MASK_BITS)
from spectral_nb.records import read_records

N = 3000


@pytest.fixture(scope='module')
def survey():
    "All targets, the zWarning != 0 ones included (the mixes are those of the targets)."
    return mock.generate(N, seed=7, cfg=mock.MockConfig(drop_zwarning=False))


@pytest.fixture(scope='module')
def with_models():
    "A chunk with its noise-free wide-grid models: galaxies of every population, quasars and stars."
    rng = np.random.default_rng(11)
    cls = np.array(['GALAXY'] * 60 + ['QSO'] * 60 + ['STAR'] * 40, dtype=object)
    sub = np.array(['STARFORMING'] * 30 + ['STARBURST'] * 15 + ['AGN'] * 15 + ['QSO'] * 60 + ['A0'] * 10 + ['M5'] * 10 + ['K3'] * 10 + ['WD'] * 10, dtype=object)
    cat, pix, models = mock.generate_chunk(cls, sub, rng, mock.MockConfig().validate(), return_models=True)
    return pd.DataFrame(cat), pix, models


def _peak_offset(model_row, rest, z, search=12):
    "Pixel offset between the model's local maximum near rest*(1+z) and that position, on the wide grid."
    wl = mock_templates.WIDE_LOGLAM
    c = (np.log10(rest * (1 + z)) - wl[0]) / 1e-4
    i = int(round(c))
    seg = model_row[i - search:i + search + 1]
    return (i - search + int(np.argmax(seg))) - c


@pytest.mark.parametrize('line', ['Ha', 'Hb', '[OIII]5007'])
def test_galaxy_lines_sit_at_their_redshifted_wavelengths(with_models, line):
    cat, _, models = with_models
    g = np.flatnonzero((cat['class'] == 'GALAXY').to_numpy())
    offs = [_peak_offset(models['wide'][i], LINES[line], cat.z[i]) for i in g]
    assert np.median(np.abs(offs)) <= 1.0, offs


# Peak wavelengths of the broad lines in the SDSS composite (Vanden Berk et al. 2001, Table 2): CIV peaks ~560 km/s
# blueward of its laboratory wavelength, as in real quasars; H-beta peaks on its narrow core at the laboratory wavelength.
# Mock quasars scatter around these peaks by their own line shifts.
QSO_PEAKS = {'CIV': 1546.15, 'MgII': 2800.26, 'Hb': 4862.68}


@pytest.mark.parametrize('line', list(QSO_PEAKS))
def test_qso_broad_lines_sit_at_their_redshifted_wavelengths(with_models, line):
    cat, _, models = with_models
    q = np.flatnonzero((cat['class'] == 'QSO').to_numpy())
    wide = 10 ** mock_templates.WIDE_LOGLAM
    inside = [i for i in q if wide[60] < QSO_PEAKS[line] * (1 + cat.z[i]) < wide[-60]]
    assert len(inside) >= 5
    offs = [_peak_offset(models['wide'][i], QSO_PEAKS[line], cat.z[i], search=40) for i in inside]
    # pixels of 69 km/s: centred on the composite's peak, C IV a little blueward of it in luminous quasars (its extra
    # blueshift grows by 450 km/s per dex of L5100; Richards et al. 2011); each quasar's own shift scatters them, ~150 km/s
    assert abs(np.median(offs)) <= (9 if line == 'CIV' else 4), offs
    assert np.median(np.abs(offs)) <= (10 if line == 'CIV' else 4), offs


def test_class_mix_is_the_requested_one(survey):
    cat, _ = survey
    got = cat['class'].value_counts(normalize=True)
    for k, v in CLASS_MIX_STATED.items():
        assert abs(got[k] - v) < 0.002


def test_galaxy_subclass_mix_within_a_few_percent(survey):
    cat, _ = survey
    got = cat[cat['class'] == 'GALAXY'].subClass.replace('', 'NULL').value_counts(normalize=True)
    for k, v in GALAXY_SUBCLASS_MIX.items():
        assert abs(got.get(k, 0) - v) < 0.04, (k, got.get(k, 0), v)


def test_star_group_mix_within_a_few_percent(survey):
    cat, _ = survey
    got = cat[cat['class'] == 'STAR'].subClass.map(STAR_SUBCLASS_GROUP).value_counts(normalize=True)
    for k, v in STAR_GROUP_MIX.items():
        assert abs(got.get(k, 0) - v) < 0.02, (k, got.get(k, 0), v)


def test_galaxy_subclass_follows_sdss_rules_on_measured_lines(survey):
    cat, _ = survey
    g = cat[cat['class'] == 'GALAXY']
    m = lambda l: g[f'true_measflux_{l}']
    e = lambda l: g[f'true_measfluxerr_{l}']
    again = mock.sdss_galaxy_subclass(m('Hb'), m('[OIII]5007'), m('Ha'), m('[NII]6584'), e('Hb'), e('[OIII]5007'), e('Ha'), e('[NII]6584'),
                                      g.true_measew_Ha, g.true_broad_snr)
    assert (again == g.subClass.to_numpy()).all()


def test_galaxy_subclass_agrees_with_rules_on_true_fluxes_at_high_sn(survey):
    "Applying the rules to the generator's true fluxes (at the measured errors) gives the same label for nearly all bright galaxies."
    cat, _ = survey
    g = cat[(cat['class'] == 'GALAXY') & (cat.true_sn_median > 10)]
    t = lambda l: g[f'true_lineflux_{l}']
    e = lambda l: g[f'true_measfluxerr_{l}']
    broad_snr = g['true_lineflux_Ha_broad'] / g['true_measfluxerr_Ha_broad']
    labels = mock.sdss_galaxy_subclass(t('Hb'), t('[OIII]5007'), t('Ha'), t('[NII]6584'), e('Hb'), e('[OIII]5007'), e('Ha'), e('[NII]6584'),
                                       -g.true_ew_Ha, broad_snr)   # true_ew_* use the thesis sign (emission < 0)
    agree = (labels == g.subClass.to_numpy()).mean()
    assert len(g) > 200 and agree > 0.9, agree


def test_magnitudes_match_speclite_photometry_of_the_model(with_models):
    import speclite.filters, astropy.units as u
    cat, _, models = with_models
    fs = speclite.filters.load_filters('sdss2010-*')
    wave = 10 ** mock_templates.WIDE_LOGLAM
    mags = fs.get_ab_magnitudes(models['wide'] * 1e-17 * u.erg / u.s / u.cm ** 2 / u.Angstrom, wave * u.Angstrom)
    for b in 'ugriz':
        np.testing.assert_allclose(np.array(mags[f'sdss2010-{b}'], float), cat[f'true_petroMag_{b}'], atol=0.01)
        pull = (cat[f'petroMag_{b}'] - cat[f'true_petroMag_{b}']) / cat[f'petroMagErr_{b}']
        assert np.abs(pull).max() < 6 and 0.6 < pull.std() < 1.4


def test_r_magnitudes_in_the_sdss_spectroscopic_range(survey):
    cat, _ = survey
    assert cat.petroMag_r.between(13.5, 22.5).all()


def test_negative_fluxes_at_low_sn_only(survey):
    cat, pix = survey
    good = pix['ivar'] > 0
    neg = ((pix['flux'] < 0) & good).sum(1) / np.maximum(good.sum(1), 1)
    low, high = cat.true_sn_median < 2, cat.true_sn_median > 20
    assert low.sum() > 20 and high.sum() > 20
    assert np.median(neg[low]) > 0.1
    assert np.median(neg[high]) < 0.001


def test_sn_spans_sdss_range(survey):
    cat, _ = survey
    sn = cat.true_sn_median
    assert 2 < sn.median() < 12
    assert np.percentile(sn, 5) < 2 and np.percentile(sn, 99) > 30


def test_missing_pixel_blocks_in_about_one_percent(survey):
    cat, pix = survey
    dead = (pix['ivar'] == 0).sum(1)
    blocks = dead >= 200
    assert 0.004 <= blocks.mean() <= 0.018
    assert (blocks == cat.true_missing_block.to_numpy()).all()
    nodata = (pix['and_mask'] & (1 << MASK_BITS['NODATA'])) > 0
    assert (nodata == (pix['ivar'] == 0)).all()


def _index(flux, wave, band, cont):
    b = (wave > band[0]) & (wave < band[1]); c = (wave > cont[0]) & (wave < cont[1])
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.median(flux[:, b], 1) / np.median(flux[:, c], 1)


def test_star_groups_are_distinguishable(survey):
    "TiO in M stars, strong Balmer lines in A stars, neither in quasars."
    cat, pix = survey
    wave = sdss_wavelength()
    grp = cat.subClass.map(STAR_SUBCLASS_GROUP)
    bright = (cat.true_sn_median > 5) & ~cat.true_missing_block
    sel = {k: ((grp == k) & bright).to_numpy() for k in ('M', 'A')}
    sel['QSO'] = ((cat['class'] == 'QSO') & bright).to_numpy()
    tio = {k: np.median(_index(pix['flux'][m], wave, (7060, 7140), (7000, 7040))) for k, m in sel.items()}
    hd = {k: np.median(_index(pix['flux'][m], wave, (4095, 4110), (4040, 4070))) for k, m in sel.items()}
    assert tio['M'] < 0.8 and tio['A'] > 0.95 and tio['QSO'] > 0.9, tio
    assert hd['A'] < 0.75 and hd['M'] > 0.85 and hd['QSO'] > 0.85, hd


def test_same_seed_gives_byte_identical_flux(tmp_path):
    a = mock.write_mock(tmp_path / 'a', 1200, seed=5, progress=False)
    b = mock.write_mock(tmp_path / 'b', 1200, seed=5, progress=False)
    c = mock.write_mock(tmp_path / 'c', 1200, seed=6, progress=False)
    fa, fb, fc = (read_records(p)[1]['flux'] for p in (a, b, c))
    assert fa.tobytes() == fb.tobytes()
    assert fa.tobytes() != fc.tobytes()


@pytest.mark.parametrize('n', [-1, 0, 2.5, '10', True])
def test_bad_n_is_refused(tmp_path, n):
    with pytest.raises(ValueError, match='positive integer'):
        mock.write_mock(tmp_path, n, progress=False)
    assert not list(tmp_path.iterdir())


def test_unknown_class_in_mix_is_refused(tmp_path):
    with pytest.raises(ValueError, match='unknown label'):
        mock.write_mock(tmp_path, 10, cfg=mock.MockConfig(class_mix={'GALAXY': 0.5, 'PULSAR': 0.5}), progress=False)
    assert not list(tmp_path.iterdir())


def test_mix_not_summing_to_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match='sum to'):
        mock.write_mock(tmp_path, 10, cfg=mock.MockConfig(class_mix={'GALAXY': 0.5, 'QSO': 0.3, 'STAR': 0.1}), progress=False)
    assert not list(tmp_path.iterdir())


def test_unwritable_output_is_refused(tmp_path):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    with pytest.raises(PermissionError, match='Cannot write'):
        mock.write_mock(blocker / 'out', 10, progress=False)


def test_failure_midway_writes_nothing_and_keeps_old_file(tmp_path, monkeypatch):
    path = mock.write_mock(tmp_path, 30, seed=1, progress=False)
    before = path.read_bytes()
    real = mock.generate_chunk
    calls = {'n': 0}
    def flaky(*a, **k):
        calls['n'] += 1
        if calls['n'] == 2: raise RuntimeError('disk on fire')
        return real(*a, **k)
    monkeypatch.setattr(mock, 'generate_chunk', flaky)
    with pytest.raises(RuntimeError):
        mock.write_mock(tmp_path, 2500, seed=2, progress=False)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['raw.parquet']


def test_cli_mock_writes_raw_parquet(tmp_path):
    from spectral_nb.cli import main
    assert main(['-q', 'mock', '--n', '40', '--seed', '9', '--out', str(tmp_path)]) == 0
    cat, pix = read_records(tmp_path / 'raw.parquet')
    assert 36 <= len(cat) <= 40 and pix['flux'].shape == (len(cat), NPIX) and (cat.source == 'mock').all()   # zWarning != 0 dropped
    assert (cat.zWarning == 0).all()
    assert main(['-q', 'mock', '--n', '40', '--class-mix', '{"GALAXY": 1.2}', '--out', str(tmp_path / 'bad')]) == 2
    assert not (tmp_path / 'bad' / 'raw.parquet').exists()


# --- observed libraries, measured redshifts, target selection (issue 9) ---

LIBRARY_ORIGINS = {'mastar', 'miles', 'stelib', 'physical'}


def test_every_record_says_where_its_spectrum_came_from(survey):
    cat, _ = survey
    assert 'true_library' in cat and 'true_library_id' in cat
    assert set(cat.true_library[cat['class'] == 'STAR']) <= LIBRARY_ORIGINS
    assert set(cat.true_library[cat['class'] == 'GALAXY']) == {'mastar_ssp', 'm11', 'bc03'}
    assert set(cat.true_library[cat['class'] == 'QSO']) == {'vandenberk2001'}
    lib = cat.true_library[cat['class'] == 'STAR']
    assert (lib != 'physical').mean() > 0.9          # nearly all stars are observed spectra


def test_every_star_subclass_maps_to_a_library_spectrum_or_a_named_physical_model():
    "Observed spectra for every subclass a library can stand for; the physical model only for the named classes."
    rng = np.random.default_rng(3)
    sub = np.array(list(mock.STAR_SUBCLASSES) * 3, dtype=object)
    cat, _ = mock.generate_chunk(np.array(['STAR'] * len(sub)), sub, rng, mock.MockConfig().validate())
    assert set(mock_templates.PHYSICAL_ONLY) < set(mock.STAR_SUBCLASSES)
    for s, lib in zip(cat['subClass'], cat['true_library']):
        if s in mock_templates.PHYSICAL_ONLY: assert lib == 'physical', (s, lib)
        else: assert lib in {'mastar', 'miles', 'stelib'}, (s, lib)
    # late M types no library holds are observed M stars of the nearest type, recoloured
    meta, _ = mock_templates.library_stars()
    missing = [s for s in libraries.NORMAL_SEQUENCE if s not in set(meta.subclass)]
    assert missing and all(s.startswith('M') for s in missing), missing
    cat, _ = mock.generate_chunk(np.array(['STAR'] * 4), np.array(['M9'] * 4, dtype=object), rng, mock.MockConfig().validate())
    assert set(cat['true_library']) <= {'mastar', 'miles', 'stelib'}


def test_library_star_is_the_observed_spectrum_redshifted():
    "The noiseless model of a library star is its library spectrum, shifted by its radial velocity and reddened."
    cat, pix, models = mock.generate_chunk(np.array(['STAR'] * 6), np.array(['K3', 'G2', 'M2', 'F5', 'A0', 'K5'], dtype=object),
                                           np.random.default_rng(5), mock.MockConfig(star_libraries=('miles',)).validate(), return_models=True)
    meta, T = mock_templates.library_stars(('miles',))
    wave = mock_templates.WIDE_WAVE
    for i in range(6):
        j = int(np.flatnonzero(meta.id.to_numpy() == cat['true_library_id'][i])[0])
        tmpl = np.interp(wave / (1 + cat['true_z'][i]), mock_templates.REST_WAVE, T[j])
        m = (wave > 4000) & (wave < 7300)
        ratio = models['wide'][i][m] / tmpl[m]
        assert np.std(ratio) / np.mean(ratio) < 0.12        # only smooth dust reddening between them
        hi = np.diff(np.log(models['wide'][i][m])) - np.diff(np.log(tmpl[m]))
        assert np.std(hi) < 0.01                            # the absorption-line pattern is the library's


def test_sources_can_be_held_out():
    cfg = mock.MockConfig(star_libraries=('stelib',), galaxy_libraries=('bc03',))
    cat, _ = mock.generate(1500, seed=3, cfg=cfg)
    assert set(cat.true_library[cat['class'] == 'STAR']) <= {'stelib', 'physical'}
    assert set(cat.true_library[cat['class'] == 'GALAXY']) == {'bc03'}
    with pytest.raises(ValueError, match='unknown library'):
        mock.MockConfig(star_libraries=('elodie',)).validate()


def test_redshift_errors_are_measured_not_a_class_constant(survey):
    cat, _ = survey
    ok = cat.zWarning == 0
    for c in ('GALAXY', 'QSO', 'STAR'):
        d = cat[ok & (cat['class'] == c)]
        assert d.zErr.quantile(0.9) / d.zErr.quantile(0.1) > 3, c            # spread, not a constant
        pull = ((d.z - d.true_z) / d.zErr).abs().median()
        assert 0.3 < pull < 1.5, (c, pull)                                   # z scatters by about its error
        if c != 'QSO':   # (quasars: the sharp Lyman-alpha forest of faint high-z ones confounds S/N)
            rho = pd.Series(d.zErr.to_numpy()).corr(pd.Series(d.true_sn_median.to_numpy()), method='spearman')
            assert rho < -0.2, (c, rho)                                      # brighter -> smaller error
    assert cat[ok & (cat['class'] == 'QSO')].zErr.median() > 3 * cat[ok & (cat['class'] == 'GALAXY')].zErr.median()


def test_some_redshift_fits_fail_and_the_query_filter_drops_them(survey):
    cat, _ = survey
    bad = cat.zWarning != 0
    assert 0.005 < bad.mean() < 0.12, bad.mean()
    assert bad[cat['class'] == 'QSO'].mean() > bad[cat['class'] == 'GALAXY'].mean()
    assert cat.true_sn_median[bad].median() < cat.true_sn_median[~bad].median()
    kept, _ = mock.generate(1000, seed=7)
    assert (kept.zWarning == 0).all() and len(kept) < 1000


def test_quasars_reach_z5_with_broad_absorption_lines(survey):
    cat, _ = survey
    q = cat[cat['class'] == 'QSO']
    assert q.true_z.max() > 4.0 and q.true_z.max() <= 5.0
    assert 0.04 < q.true_bal[q.true_z > 1.5].mean() < 0.25


# --- the real sky: two spectrographs, quasars as diverse as real ones (issue "The real sky", items 2 and 3) ---

from spectral_nb import mock_instruments
from spectral_nb.mock_templates import WIDE_WAVE


def test_each_spectrum_has_its_spectrographs_coverage(survey):
    cat, pix = survey
    assert (cat.instrument == cat.true_spectrograph).all() and set(cat.instrument) == {'SDSS', 'BOSS'}
    assert (cat.instrument == 'BOSS').sum() == N // 2                     # the mix is allocated exactly
    for name, p in mock_instruments.SPECTROGRAPHS.items():
        c = cat[cat.instrument == name]
        (lo0, lo1), (hi0, hi1) = p['coverage']
        assert c.true_coverage_lo.between(lo0, lo1).all() and c.true_coverage_hi.between(hi0, hi1).all()
    wave = sdss_wavelength()
    outside = (wave[None] < cat.true_coverage_lo.to_numpy()[:, None]) | (wave[None] > cat.true_coverage_hi.to_numpy()[:, None])
    assert (pix['ivar'][outside] == 0).all() and (pix['flux'][outside] == 0).all()


def test_pixels_outside_a_spectrographs_coverage_are_missing(monkeypatch):
    "A spectrograph that does not reach the grid's ends leaves them with flux 0, ivar 0 and NODATA, as preprocessing expects."
    monkeypatch.setitem(mock_instruments.SPECTROGRAPHS['SDSS'], 'coverage', ((4000.0, 4000.0), (8000.0, 8000.0)))
    cat, pix = mock.generate_chunk(np.array(['STAR'] * 6 + ['QSO'] * 6, dtype=object), np.array(['G2'] * 6 + ['QSO'] * 6, dtype=object),
                                   np.random.default_rng(2), mock.MockConfig(missing_fraction=0).validate(),
                                   spectrograph=np.array(['SDSS', 'BOSS'] * 6, dtype=object))
    wave = sdss_wavelength()
    out = (wave < 4000) | (wave > 8000)
    legacy = np.asarray(cat['instrument']) == 'SDSS'
    assert (pix['ivar'][legacy][:, out] == 0).all() and (pix['flux'][legacy][:, out] == 0).all()
    assert ((pix['and_mask'][legacy][:, out] & (1 << MASK_BITS['NODATA'])) > 0).all()
    assert (pix['ivar'][legacy][:, ~out] > 0).all() and (pix['ivar'][~legacy] > 0).all()


def test_legacy_spectra_are_noisier_at_both_ends_than_boss(survey):
    cat, pix = survey
    wave = sdss_wavelength()
    ok = ~cat.true_missing_block.to_numpy()
    with np.errstate(divide='ignore'):
        noise = 1 / np.sqrt(pix['ivar'])
    def end_to_middle(rows, band):
        b, m = (wave > band[0]) & (wave < band[1]), (wave > 6100) & (wave < 6500)
        return np.median(np.median(noise[rows][:, b], 1) / np.median(noise[rows][:, m], 1))
    for band in ((3850, 4000), (8900, 9100)):
        legacy = end_to_middle(ok & (cat.instrument == 'SDSS').to_numpy(), band)
        boss = end_to_middle(ok & (cat.instrument == 'BOSS').to_numpy(), band)
        assert legacy > 1.3 * boss, (band, legacy, boss)


def test_spectrograph_mix_is_a_parameter():
    cat, _ = mock.generate(300, seed=4, cfg=mock.MockConfig(spectrograph_mix={'SDSS': 1.0}, drop_zwarning=False))
    assert (cat.instrument == 'SDSS').all()
    with pytest.raises(ValueError, match='unknown label'):
        mock.MockConfig(spectrograph_mix={'2dF': 1.0}).validate()


def test_quasar_line_strengths_vary_line_by_line(survey):
    cat, _ = survey
    q = cat[cat['class'] == 'QSO']
    r = np.log10(q.true_qsoew_MgII / q.true_qsoew_Hb)
    assert 0.2 < r.std() < 0.45, r.std()                                 # not one strength for all lines
    rho = np.corrcoef(np.log10(q.true_qsoew_MgII), np.log10(q.true_qsoew_Hb))[0, 1]
    assert 0.1 < rho < 0.8, rho                                          # yet the lines of one quasar correlate


def _ew(model_row, z, lo, hi, side=40.0):
    w = WIDE_WAVE / (1 + z)
    b, r, m = (w > lo - side) & (w < lo), (w > hi) & (w < hi + side), (w >= lo) & (w <= hi)
    cb, cr = np.median(model_row[b]), np.median(model_row[r])
    c = cb + (cr - cb) * (w[m] - lo) / (hi - lo)
    return np.sum((model_row[m] - c) / c * np.gradient(w)[m])


def test_quasar_line_ratios_spread_on_the_spectra_themselves():
    "Measured on the noise-free models, not read from the truth: the Mg II / H-beta EW ratio spreads by > 0.15 dex."
    cat, _, models = mock.generate_chunk(np.array(['QSO'] * 400, dtype=object), np.array(['QSO'] * 400, dtype=object),
                                         np.random.default_rng(8), mock.MockConfig().validate(), return_models=True)
    z = np.asarray(cat['true_z'])
    sel = np.flatnonzero((z > 0.35) & (z < 1.1) & (np.asarray(cat['true_host_frac']) < 0.3))
    assert len(sel) >= 20
    mg = np.array([_ew(models['wide'][i], z[i], 2700, 2900) for i in sel])
    hb = np.array([_ew(models['wide'][i], z[i], 4750, 4950) for i in sel])
    ok = (mg > 2) & (hb > 2)
    assert ok.sum() >= 15 and np.log10(mg[ok] / hb[ok]).std() > 0.15


def test_weak_line_host_dominated_and_reddened_quasars_in_their_fractions(survey):
    cat, _ = survey
    q = cat[cat['class'] == 'QSO']
    assert 0.012 <= q.true_weak_line[q.true_z > 1.5].mean() <= 0.06 and not q.true_weak_line[q.true_z <= 1.5].any()  # 3% at z > 1.5
    assert 0.06 <= q.true_reddened.mean() <= 0.14                         # 10% reddened
    assert q.true_host_frac.max() <= 0.85 and (q.true_host_frac[q.true_z >= 0.8] == 0).all()
    low = q[q.true_z < 0.5]
    assert len(low) > 30 and 0.2 <= (low.true_host_frac > 0.5).mean() <= 0.9   # host-dominated at low z
    assert q.true_qsoew_Hb[q.true_weak_line].median() < 0.4 * q.true_qsoew_Hb[~q.true_weak_line].median()


def test_reddened_quasars_are_redder(survey):
    cat, _ = survey
    q = cat[(cat['class'] == 'QSO') & cat.true_z.between(0.6, 2.0)]
    gi = q.true_petroMag_g - q.true_petroMag_i
    assert gi[q.true_reddened].median() > gi[~q.true_reddened].median() + 0.15


def test_raw_records_carry_the_instrument(tmp_path):
    cat, _ = read_records(mock.write_mock(tmp_path, 30, seed=3, progress=False))
    assert set(cat.instrument) <= {'SDSS', 'BOSS'} and (cat.instrument == cat.true_spectrograph).all()


def test_mock_log_states_the_count_it_wrote(tmp_path, caplog):
    "write_mock says how many spectra it wrote and how many targets it dropped (failed redshift fits), never the count asked for."
    import logging, re
    from spectral_nb.records import count_records
    with caplog.at_level(logging.INFO, logger='spectral_nb.mock'):
        path = mock.write_mock(tmp_path, 300, seed=3, progress=False)
    msg = next(r.getMessage() for r in caplog.records if r.getMessage().startswith('wrote'))
    wrote, asked = map(int, re.match(r'wrote (\d+) mock spectra of (\d+) targets', msg).groups())
    assert wrote == count_records(path) and asked == 300
    assert (wrote == asked) or f'{asked - wrote} dropped' in msg


def test_extreme_emission_line_galaxies_are_starbursts(survey):
    "The far tail of starbursts (green peas, blue compact dwarfs): H-alpha EWs of hundreds of A, labelled STARBURST by the SDSS rule."
    cat, _ = survey
    g = cat[cat['class'] == 'GALAXY']
    ext = g[g.true_ew_Ha < -250]  # thesis sign: emission < 0
    sb = g[g.subClass.astype(str).str.startswith('STARBURST')]
    assert len(ext) >= 3 and 0.08 <= len(ext) / len(sb) <= 0.4
    assert ext.subClass.astype(str).str.startswith('STARBURST').mean() >= 0.8  # a few too faint to measure
    assert (ext.true_ew_OIII5007 < 2 * ext.true_ew_Hb).mean() > 0.7  # metal-poor: [O III] 5007 several times H-beta


def test_star_forming_quasar_hosts_carry_nebular_lines():
    "A quarter of low-z quasar hosts are star-forming: their spectra show narrow [O II] 3727 that the others lack."
    cat, _, models = mock.generate_chunk(np.array(['QSO'] * 600, dtype=object), np.array(['QSO'] * 600, dtype=object),
                                         np.random.default_rng(5), mock.MockConfig().validate(), return_models=True)
    z, sf, h = (np.asarray(cat[c]) for c in ('true_z', 'true_sf_host', 'true_host_frac'))
    low = np.flatnonzero((z > 0.05) & (z < 0.6) & (h > 0.3))
    assert 0.08 <= sf[z < 0.8].mean() <= 0.4 and not sf[z >= 0.8].any()
    oii = np.array([_ew(models['wide'][i], z[i], 3722, 3734, side=30.0) for i in low])
    assert sf[low].sum() >= 5 and np.median(oii[sf[low]]) > np.median(oii[~sf[low]]) + 2


def test_legacy_low_z_quasars(survey):
    "SDSS-I/II's low-z broad-line AGN: 30% of its quasars at z = 0.05-0.6, bright; BOSS's quasars mostly at higher z."
    cat, _ = survey
    q = cat[cat['class'] == 'QSO']
    leg, boss = q[q.true_spectrograph == 'SDSS'], q[q.true_spectrograph == 'BOSS']
    assert 0.28 <= (leg.true_z < 0.6).mean() <= 0.6 and (boss.true_z < 0.6).mean() < 0.15
    assert leg.true_petroMag_r[leg.true_z < 0.6].median() < 19.0           # bright: galaxy-sample and low-z quasar targets
