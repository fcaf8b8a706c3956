"Baselines stage (nbs/08_baselines.ipynb): the template fit recovers class and z of noiseless mock spectra, photometry beats the majority, metrics.json has its keys."
import json
import numpy as np, pandas as pd
import pytest
from spectral_nb.config import CLASSES, NPIX
from spectral_nb.template_fit import (build_templates, design, fit_templates, chi2_scan, shift_range, TemplateSet, S_MAX,
                                      FIT_REST_NPIX, legendre_basis)
from spectral_nb.baselines import fit_photometry, photometry_features, majority_class, run_baselines
from spectral_nb.mock import ZWARNING_SMALL_DELTA_CHI2
from spectral_nb.dataset import encode_labels, read_fluxes


@pytest.fixture(scope='module')
def dataset(mock_dataset):
    return mock_dataset(2000, 11, split_seed=11)[1]


@pytest.fixture(scope='module')
def designs(dataset):
    info = pd.read_hdf(dataset, 'source_info'); tr = np.flatnonzero((info['split'] == 'train').to_numpy())
    return [design(s, 3) for s in build_templates(read_fluxes(dataset)[tr], info.iloc[tr], k=8, max_per_class=250, seed=0)]


def test_chi2_scan_matches_direct_least_squares():
    rng = np.random.default_rng(3)
    ts = TemplateSet('t', 'GALAXY', rng.standard_normal((3, FIT_REST_NPIX)), shift_range('GALAXY'))
    d = design(ts, 2); f = rng.standard_normal((1, NPIX))
    chi = chi2_scan(f, d)[0]
    for j in (0, 1234, len(ts.shifts) - 1):
        a = S_MAX - ts.shifts[j]
        A = np.concatenate([ts.basis[:, a:a + NPIX], legendre_basis(2)]).T
        r = f[0] - A @ np.linalg.lstsq(A, f[0], rcond=None)[0]
        assert chi[j] == pytest.approx((r ** 2).sum(), rel=1e-3)


def test_template_fit_recovers_class_and_z_of_noiseless_mock_spectra(designs):
    from spectral_nb.mock import MockConfig, generate_chunk, allocate
    cfg = MockConfig().validate(); rng = np.random.default_rng(5)
    cls = np.repeat(np.array(CLASSES, dtype=object), 20)
    sub = cls.copy()
    sub[cls == 'GALAXY'] = allocate(20, cfg.galaxy_mix, rng); sub[cls == 'STAR'] = allocate(20, cfg.star_mix, rng)
    cat, _, models = generate_chunk(cls, sub, rng, cfg, return_models=True)
    fit = fit_templates(models['model'], designs)
    z = np.asarray(cat['true_z']); dz = np.abs(fit['z_fit'].to_numpy() - z) / (1 + z)
    acc = (fit['template_class'].to_numpy() == cls).mean()
    # since the quasars vary line by line (03f), their eigen-templates are flexible enough to fit a few noiseless white dwarfs
    # and K7/M0 stars as z ~ 2-3 quasars (4 of 20 stars at seed 5): template fitting's known star/QSO confusion, kept visible here
    assert acc >= 0.9, pd.DataFrame(dict(cls=cls, sub=sub, pred=fit['template_class'], z=z, z_fit=fit['z_fit']))[fit['template_class'].to_numpy() != cls]
    g = cls == 'GALAXY'
    q = (cls == 'QSO') & ~np.asarray(cat['true_bal'], bool)   # BAL troughs hide the lines that fix z: a known failure, left out here
    assert q.sum() >= 12
    assert (dz[g] < 0.003).all(), np.c_[z[g], fit['z_fit'][g]][dz[g] >= 0.003]
    assert (dz[q] < 0.01).all(), np.c_[z[q], fit['z_fit'][q]][dz[q] >= 0.01]


def test_flag_is_set_on_featureless_noise_more_than_on_clean_spectra(designs, dataset):
    rng = np.random.default_rng(9)
    noise = 1.0 + 0.5 * rng.standard_normal((24, NPIX))          # a flat continuum under strong noise: no class, no redshift
    flagged_noise = (fit_templates(noise, designs)['zwarning'] & ZWARNING_SMALL_DELTA_CHI2 > 0).mean()
    info = pd.read_hdf(dataset, 'source_info'); bright = np.flatnonzero((info['sn_median'] > 10).to_numpy())[:24]
    flagged_bright = (fit_templates(read_fluxes(dataset)[bright], designs)['zwarning'] & ZWARNING_SMALL_DELTA_CHI2 > 0).mean()
    assert flagged_noise >= 0.5 and flagged_bright <= 0.1, (flagged_noise, flagged_bright)


def test_photometry_beats_majority(dataset):
    info = pd.read_hdf(dataset, 'source_info')
    tr, te = info[info['split'] == 'train'], info[info['split'] == 'test']
    ytr, yte = encode_labels(tr['label_main'], CLASSES), encode_labels(te['label_main'], CLASSES)
    maj = (yte == majority_class(ytr)).mean()
    for wz in (False, True):
        acc = (fit_photometry(tr, ytr, wz, seed=0, max_iter=60).predict(photometry_features(te, wz)) == yte).mean()
        assert acc > maj + 0.1, (wz, acc, maj)


def test_template_build_refuses_a_missing_class(dataset):
    info = pd.read_hdf(dataset, 'source_info'); m = np.flatnonzero((info['label_main'] != 'QSO').to_numpy())[:50]
    with pytest.raises(ValueError, match='QSO'):
        build_templates(read_fluxes(dataset)[m], info.iloc[m], k=3)


def test_stage_writes_metrics_json_with_the_baselines_keys(dataset, tmp_path):
    run_baselines(dataset, tmp_path, seed=1, max_train=60, max_test=150, n_components=5, photometry_iter=40)
    b = json.loads((tmp_path / 'metrics.json').read_text())['baselines']
    t = b['template']
    for k in ('accuracy', 'spectra_per_s', 'accuracy_by_sn', 'per_class', 'z', 'fraction_flagged', 'accuracy_unflagged'):
        assert k in t, k
    for c in CLASSES: assert {'sigma_nmad', 'outlier_fraction'} <= set(t['z'][c]), c
    assert t['spectra_per_s'] > 0 and 0 <= t['fraction_flagged'] <= 1 and len(t['accuracy_by_sn']) == 5
    for k in ('photometry', 'photometry_z', 'majority'): assert 0 <= b[k]['accuracy'] <= 1, k
    assert t['accuracy'] > b['majority']['accuracy']
    for f in ('template_confusion', 'template_z', 'baselines_accuracy_by_sn'): assert (tmp_path / 'figures' / f'{f}.png').stat().st_size > 10_000
