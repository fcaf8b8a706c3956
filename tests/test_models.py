"Saved models: bundles, prediction that reproduces the reported metrics, clear errors, determinism."
import json
from pathlib import Path
import numpy as np, pandas as pd, pytest
from spectral_nb.bundle import load_bundle, save_bundle
from spectral_nb.fit import fit_model, load_task, seed_everything
from spectral_nb.predict import predict
from spectral_nb.cnn import build_compact_cnn
from spectral_nb.mixed import build_mixed, run_mixed
from spectral_nb.evaluate import report_classifier
from spectral_nb.config import CLASSES


@pytest.fixture(scope='module')
def ds(tmp_path_factory, mock_dataset):
    "A folder for this file's runs, and the 600-target survey and dataset test_streaming.py uses too."
    return (tmp_path_factory.mktemp('models'), *mock_dataset(600, 1))


def _train_compact(h5, seed=1, epochs=1):
    seed_everything(seed)
    data = load_task(h5, 'main', seed=seed)
    model = build_compact_cnn(len(CLASSES))
    hist = fit_model(model, data, 'cnn', epochs, batch_size=64)
    return model, data, hist


@pytest.fixture(scope='module')
def cnn_bundle(ds):
    d, raw, h5 = ds
    model, data, hist = _train_compact(h5, epochs=2)
    m = report_classifier('cnn_compact', model, data, 'cnn', hist, d / 'run', h5)
    path = save_bundle(d / 'run' / 'models' / 'cnn_compact', model, 'cnn', 'main', CLASSES, data['scaler'], data['spec'],
                         dataset=data['dataset'])
    return path, m


@pytest.fixture(scope='module')
def mixed_bundle(ds):
    d, raw, h5 = ds
    m = run_mixed(h5, d / 'run', 'main', 'smoke', seed=2)
    return d / 'run' / 'models' / 'mixed_main', m


def test_report_writes_every_figure_and_table(cnn_bundle, ds):
    d, _, _ = ds
    path, m = cnn_bundle
    for f in m['figures']:
        assert (d / 'run' / f).stat().st_size > 1000
    cm = pd.read_csv(d / 'run' / 'confusion_cnn_compact.csv', index_col=0)
    assert cm.to_numpy().sum() == m['n_test'] and list(cm.index) == [f'true {c}' for c in CLASSES]
    k = int(np.trace(cm.to_numpy()))
    assert m['accuracy'] == k / m['n_test'] and m['thesis'] == {}
    from scipy.stats import binomtest
    ci = binomtest(k, m['n_test']).proportion_ci(confidence_level=0.95, method='wilson')
    assert tuple(m['accuracy_ci95']) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize('which', ['cnn', 'mixed'])
def test_predict_reproduces_test_metrics(which, cnn_bundle, mixed_bundle, ds, tmp_path):
    _, _, h5 = ds
    path, m = cnn_bundle if which == 'cnn' else mixed_bundle
    df = predict(path, h5, tmp_path / 'p.csv', batch_size=100, progress=False)
    test = df[df.split == 'test']
    assert len(test) == m['n_test']
    assert abs((test.predicted == test.label_main).mean() - m['accuracy']) < 1e-9
    back = pd.read_csv(tmp_path / 'p.csv')
    assert {'prob_GALAXY', 'prob_QSO', 'prob_STAR', 'predicted', 'CLASS', 'PROB_QSO', 'ZWARNING'} <= set(back.columns)
    assert (back['CLASS'] == back['predicted']).all()  # SDSS's name beside the old one
    np.testing.assert_allclose(back[['prob_GALAXY', 'prob_QSO', 'prob_STAR']].sum(1), 1, atol=1e-4)


def test_predict_on_raw_records_matches_dataset(cnn_bundle, ds):
    _, raw, h5 = ds
    path, _ = cnn_bundle
    a = predict(path, h5, progress=False).set_index('specObjID')
    b = predict(path, raw, progress=False).set_index('specObjID')
    from spectral_nb.records import count_records
    assert len(b) == count_records(raw)   # one row per raw record: those preprocessing drops are named, not lost
    from spectral_nb.catalog import ZW
    extra = b.loc[~b.index.isin(a.index)]   # what preprocessing left out of the dataset: named, or answered with a warning
    assert ((extra['DROPPED'] != '') | ((extra['ZWARNING'] & ZW['LITTLE_COVERAGE']) > 0)).all()
    b = b.loc[a.index]
    np.testing.assert_allclose(b.loc[a.index, 'prob_QSO'], a['prob_QSO'], atol=1e-5)
    assert (b.loc[a.index, 'predicted'] == a['predicted']).all()


def _replace_table(src, dst, key, df):
    "A copy of dataset `src` with table `key` replaced by `df`, keeping the table's attributes (the dataset's stamps)."
    import shutil, tables
    shutil.copy(src, dst)
    with tables.open_file(str(src), 'r') as h:
        node = h.get_node(f'/{key}')
        attrs = {k: node._v_attrs[k] for k in node._v_attrs._v_attrnames if k.startswith('spectral_nb')}
    with pd.HDFStore(dst, 'a') as s:
        s.remove(key); s.put(key, df, format='table' if key == 'source_info' else 'fixed')
    with tables.open_file(str(dst), 'a') as h:
        for k, v in attrs.items(): h.get_node(f'/{key}')._v_attrs[k] = v
    return dst


def test_model_refuses_another_grid(cnn_bundle, ds, tmp_path):
    _, _, h5 = ds
    path, _ = cnn_bundle
    ll = 3.6 + 1e-4 * np.arange(3736)   # as many pixels, shifted: only the grid check can catch it
    bad = _replace_table(h5, tmp_path / 'other_grid.h5', 'wavelengths', pd.DataFrame({'loglam': ll, 'wavelength': 10 ** ll}))
    with pytest.raises(ValueError, match='another wavelength grid'):
        predict(path, bad, progress=False)


def test_mixed_model_refuses_missing_feature_columns(mixed_bundle, ds, tmp_path):
    _, _, h5 = ds
    path, _ = mixed_bundle
    info = pd.read_hdf(h5, 'source_info').drop(columns=['EW_Ha', 'petroMag_u'])
    bad = _replace_table(h5, tmp_path / 'no_ew.h5', 'source_info', info)
    with pytest.raises(ValueError, match=r"EW_Ha.*petroMag_u|petroMag_u.*EW_Ha"):
        predict(path, bad, progress=False)


def test_missing_bundle_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='model.keras'):
        load_bundle(tmp_path)


def test_same_seed_same_split_same_metrics_on_cpu(ds):
    _, _, h5 = ds
    m1, d1, h1 = _train_compact(h5, seed=5)
    m2, d2, h2 = _train_compact(h5, seed=5)
    assert (d1['test'].info.specObjID.to_numpy() == d2['test'].info.specObjID.to_numpy()).all()
    assert h1['val_accuracy'] == h2['val_accuracy'] and h1['loss'] == h2['loss']
    np.testing.assert_array_equal(m1.predict(d1['test'].flux, verbose=0), m2.predict(d2['test'].flux, verbose=0))


def test_bundle_meta_records_what_the_model_needs(mixed_bundle):
    path, m = mixed_bundle
    meta = json.loads((path / 'meta.json').read_text())
    assert meta['kind'] == 'mixed' and meta['classes'] == list(CLASSES) and meta['npix'] == 3736
    assert len(meta['feature_columns']) == 26 and 'EW_OIII5007' in meta['feature_columns']
    assert meta['input'] == dict(norm='median', model_smoothing_px=0.0, dataset_smoothing_px=0.0, feature_columns=meta['feature_columns'], use_flux=True)
    assert len(meta['dataset']['sha256']) == 64 and meta['test_accuracy'] == m['accuracy']


def test_cli_predict(cnn_bundle, ds, tmp_path):
    from spectral_nb.cli import main
    _, _, h5 = ds
    path, _ = cnn_bundle
    assert main(['-q', 'predict', '--model', str(path), '--data', str(h5), '--out', str(tmp_path / 'p.csv')]) == 0
    assert len(pd.read_csv(tmp_path / 'p.csv')) == len(pd.read_hdf(h5, 'source_info'))
    assert main(['-q', 'predict', '--model', str(tmp_path), '--data', str(h5), '--out', str(tmp_path / 'q.csv')]) == 2


def test_subsets_keep_the_split_proportions(ds):
    "The data-size experiment's subsets must be split 64/16/20 like the whole (their keys once coincided with the split's)."
    _, _, h5 = ds
    d = load_task(h5, 'main', max_rows=300, seed=42)
    n = {s: d[s].n for s in ('train', 'val', 'test')}
    assert sum(n.values()) == 300
    assert 0.55 < n['train'] / 300 < 0.73 and 0.1 < n['val'] / 300 < 0.22 and 0.14 < n['test'] / 300 < 0.26, n


def test_compact_cnn_sees_where_a_feature_sits():
    "A line's position is its redshift (a K star at rest vs an old galaxy at z = 0.05): the compact CNN's position map must see it, pooling alone cannot."
    from spectral_nb.cnn import build_compact_cnn, compact_trunk
    import keras
    rng = np.random.default_rng(0); n, npix = 320, 512
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, npix, 1)).astype(np.float32)
    x[np.arange(n), np.where(y == 0, 150, 350) + rng.integers(-16, 16, n), 0] += 3.0   # the same line at any phase of the 32-pixel stride, far from the edges
    def acc(model):
        model.fit(x[:240], y[:240], epochs=10, batch_size=32, verbose=0)
        return float((model.predict(x[240:], verbose=0).argmax(1) == y[240:]).mean())
    seed_everything(0)
    assert acc(build_compact_cnn(2, npix)) > 0.95
    seed_everything(0)
    inp = keras.Input((npix, 1))
    pooled = keras.Model(inp, keras.layers.Dense(2, activation='softmax')(keras.layers.Dense(64, activation='relu')(compact_trunk(inp, position_channels=0))))
    pooled.compile(optimizer=keras.optimizers.Adam(2e-3), loss='sparse_categorical_crossentropy')
    assert acc(pooled) < 0.75   # the control: translation-invariant features cannot tell the two apart


def test_tuned_cnn_searches_both_families_reproducibly(ds, tmp_path):
    "The keras-tuner search alternates the thesis's conv/pool family and the compact position-aware family, repeats itself for a seed, and keeps the thesis's space reachable."
    import keras_tuner as kt
    from spectral_nb.cnn import (REDUCED_SPACE, SEARCH_SPACE, THESIS_SPACE, build_thesis_cnn, build_tuned_cnn, tune_cnn)
    _, _, h5 = ds
    assert build_tuned_cnn(kt.HyperParameters(), len(CLASSES)).count_params() == build_compact_cnn(len(CLASSES)).count_params()
    assert SEARCH_SPACE['filters'] == THESIS_SPACE['filters'] == (64, 128, 256, 512) and 'thesis' in SEARCH_SPACE['families']
    thesis = build_tuned_cnn(kt.HyperParameters(), 3, 512, THESIS_SPACE)   # the thesis's own search: its family only
    assert thesis.name == 'thesis_cnn' and thesis.count_params() == build_thesis_cnn(kt.HyperParameters(), 3, 512).count_params()
    data = load_task(h5, 'main', max_rows=300, seed=1)
    tables = [tune_cnn(data, REDUCED_SPACE, 2, 1, tmp_path / f't{i}', seed=3)[1] for i in range(2)]
    assert set(tables[0]['trunk_family']) == {'compact', 'thesis'}
    pd.testing.assert_frame_equal(tables[0], tables[1])
