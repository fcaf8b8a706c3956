"Model inputs: one path for training and prediction, brightness invariance, smoothing applied once, own scaler, clear errors, atomic runs."
import hashlib, json, logging, shutil
from pathlib import Path
import numpy as np, pandas as pd, pytest
from spectral_nb.preprocess import preprocess
from spectral_nb.bundle import apply_temperature, bundle_spec, load_bundle
from spectral_nb.dataset import dataset_hash, read_fluxes, read_info
from spectral_nb.fit import augmented_inputs, fit_epochs, fit_model, load_task, seed_everything
from spectral_nb.inputs import InputSpec, model_input, prepare_flux
from spectral_nb.metrics import wilson
from spectral_nb.predict import predict
from spectral_nb.spectra import spectrum_scale
from spectral_nb import inputs, predict as PR
from spectral_nb import cnn as C
from spectral_nb.mixed import run_mixed


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def s4(tmp_path_factory, mock_dataset):
    "A 300-spectrum mock survey preprocessed at sigma 4, and a smoke-profile CNN run on it (tuned CNN + compact CNN, flux only)."
    d = tmp_path_factory.mktemp('s4')
    raw, h5 = mock_dataset(300, 4, smoothing_px=4)
    res = C.run_cnn(h5, d / 'run', 'smoke', seed=3)
    return d, raw, h5, res


def _scaled_copy(h5, dst, c):
    "A copy of a dataset with every flux multiplied by c (everything else, stamps and labels included, unchanged)."
    import tables
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(h5, dst)
    with tables.open_file(str(dst), 'a') as f:
        t = f.root.fluxes.table
        t.modify_column(colname='values_block_0', column=t.col('values_block_0') * np.float32(c))
    return dst


def test_flux_only_class_does_not_change_with_brightness(s4, tmp_path):
    "Multiplying every spectrum by a constant (0.01 to 100) changes no predicted class of a flux-only CNN."
    d, _, h5, _ = s4
    path = d / 'run' / 'models' / 'cnn_compact'
    base = predict(path, h5, progress=False)
    for c in (0.01, 0.1, 10, 100):
        p = predict(path, _scaled_copy(h5, tmp_path / f'x{c}' / 'dataset.h5', c), progress=False)
        changed = (p['predicted'].to_numpy() != base['predicted'].to_numpy()).mean()
        assert changed == 0, f'x{c}: {changed:.1%} of the classes changed'
        np.testing.assert_allclose(p['prob_QSO'], base['prob_QSO'], atol=1e-4)


def _stale_scale_copy(h5, dst, c):
    "A copy of a dataset whose stored flux_scale column is multiplied by c (fluxes unchanged): a stale scale."
    import tables
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(h5, dst)
    with pd.HDFStore(str(dst), 'r') as s:
        ax = next(a for a in s.get_storer('source_info').values_axes if 'flux_scale' in list(a.values))
        cname, j = ax.cname, list(ax.values).index('flux_scale')
    with tables.open_file(str(dst), 'a') as f:
        t = f.root.source_info.table
        blk = t.col(cname); blk[:, j] *= np.float32(c); t.modify_column(colname=cname, column=blk)
    return dst


def test_predict_divides_by_the_stored_scale_and_checks_it(s4, tmp_path, monkeypatch, caplog):
    """predict takes each spectrum's scale from the dataset's flux_scale column (spectrum_scale runs only on a few probe rows
    per chunk); a stale column (fluxes changed after preprocessing) is noticed, warned about, and the scale found from the
    fluxes: the predictions table is the same either way."""
    d, _, h5, _ = s4
    path = d / 'run' / 'models' / 'cnn_compact'
    n_rows = []
    real = spectrum_scale
    for m in (PR, inputs):   # predict's probes, and the scales prepare_flux finds from the fluxes where none are given
        monkeypatch.setattr(m, 'spectrum_scale', lambda f: (n_rows.append(len(f)), real(f))[1])
    base = predict(path, h5, batch_size=64, progress=False)
    n = len(base); chunks = -(-n // 64)
    assert sum(n_rows) <= 4 * chunks < n, (sum(n_rows), n)   # probes only
    n_rows.clear()
    with caplog.at_level(logging.WARNING, logger='spectral_nb.predict'):
        stale = predict(path, _stale_scale_copy(h5, tmp_path / 'stale' / 'dataset.h5', 2.0), batch_size=64, progress=False)
    assert 'does not match its fluxes' in caplog.text
    assert sum(n_rows) >= n   # every row's scale found from its fluxes
    pd.testing.assert_frame_equal(stale, base)
    stored = read_info(h5, columns=['flux_scale'])['flux_scale'].to_numpy(np.float32)
    assert stored.tobytes() == real(read_fluxes(h5)).tobytes()


def test_model_input_is_scale_invariant_on_the_trained_model(s4):
    "The property itself, on model_input: X*c gives the same model inputs and the same classes for c in (0.01, 0.1, 10, 100)."
    d, _, h5, _ = s4
    model, meta, sc = load_bundle(d / 'run' / 'models' / 'cnn_compact')
    spec = bundle_spec(meta)
    te = load_task(h5, 'main', seed=3, scaler=sc, spec=spec)['test']
    X, _ = model_input(te.raw, te.info, spec, sc)
    y = model.predict(X, verbose=0).argmax(1)
    for c in (0.01, 0.1, 10, 100):
        Xc, _ = model_input(te.raw * np.float32(c), te.info, spec, sc)
        np.testing.assert_allclose(Xc, X, atol=1e-3)
        np.testing.assert_array_equal(model.predict(Xc, verbose=0).argmax(1), y)


@pytest.mark.parametrize('name', ['cnn', 'cnn_compact'])
def test_compiled_predictor_gives_kerass_probabilities_at_any_batch_size(s4, name):
    "predict's XLA graph (per-pixel standardisation inside it, rows padded to a few fixed batch sizes) gives the Keras model's own probabilities."
    d, _, h5, _ = s4
    path = d / 'run' / 'models' / name
    model, meta, sc = load_bundle(path); spec = bundle_spec(meta)
    info = pd.read_hdf(h5, 'source_info')
    X, _ = model_input(read_fluxes(h5), info, spec, sc)
    ref = apply_temperature(model.predict(X, verbose=0), meta['calibration']['temperature'])
    cols = [f'prob_{c}' for c in meta['classes']]
    for bs in (1024, 37):   # one padded piece; many pieces, the last one padded
        p = predict(path, h5, batch_size=bs, progress=False)
        assert (p['specObjID'].to_numpy() == info['specObjID'].to_numpy()).all()
        np.testing.assert_allclose(p[cols].to_numpy(), ref, atol=2e-5)
    assert [PR._bucket(n, 1024) for n in (1, 16, 17, 600, 1024, 5000)] == [16, 16, 32, 1024, 1024, 1024]


@pytest.mark.parametrize('name', ['cnn', 'cnn_compact'])
def test_sigma4_model_reproduces_its_metrics_on_h5_and_raw(s4, name):
    "A model trained on a sigma-4 dataset: predictions on dataset.h5 and on raw.parquet reproduce the recorded test metrics (no second smoothing)."
    d, raw, h5, _ = s4
    m = json.loads((d / 'run' / f'metrics_{name}.json').read_text())
    path = d / 'run' / 'models' / name
    a = predict(path, h5, progress=False)
    b = predict(path, raw, progress=False).set_index('specObjID').loc[a['specObjID']]
    te = a[a['split'] == 'test']
    assert len(te) == m['n_test']
    assert abs((te['predicted'] == te['label_main']).mean() - m['accuracy']) < 1e-6
    for c in ('GALAXY', 'QSO', 'STAR'):
        np.testing.assert_allclose(b[f'prob_{c}'].to_numpy(), a[f'prob_{c}'].to_numpy(), atol=1e-5)
    tb = b[(a['split'] == 'test').to_numpy()]   # raw records carry no split: take the dataset's
    assert abs((tb['predicted'] == tb['label_main']).mean() - m['accuracy']) < 1e-6


def test_model_carries_its_own_scaler_not_the_folders(tmp_path, mock_dataset):
    "a.h5 then b.h5 (sigma 4) preprocessed into one folder; a model trained on a.h5 carries a's standardisation, sigma and hash."
    raw, _ = mock_dataset(300, 4)   # the survey of s4 and test_calibration.py; both datasets made here, into one folder
    a, b = tmp_path / 'a.h5', tmp_path / 'b.h5'
    preprocess(raw, a, progress=False)
    preprocess(raw, b, smoothing_px=4, progress=False)
    m = run_mixed(a, tmp_path / 'run', 'main', 'smoke', seed=2)
    path = tmp_path / 'run' / 'models' / 'mixed_main'
    sc = json.loads((path / 'scaler.json').read_text())
    meta = json.loads((path / 'meta.json').read_text())
    assert meta['input']['dataset_smoothing_px'] == 0.0 and meta['input']['model_smoothing_px'] == 0.0   # a's own, read from a.h5 (not b's 4)
    assert meta['dataset']['sha256'] == dataset_hash(a) != dataset_hash(b)
    # the bundle's flux standardisation is a's normalised training fluxes, fitted through model_input's path
    d = load_task(a, 'main', seed=2)
    tr = prepare_flux(d['train'].raw, bundle_spec(meta)).astype(np.float64)
    np.testing.assert_allclose(sc['flux_mean'], tr.mean(0), rtol=1e-4, atol=1e-6)
    df = predict(path, a, progress=False)
    te = df[df['split'] == 'test']
    assert abs((te['predicted'] == te['label_main']).mean() - m['accuracy']) < 1e-6


@pytest.fixture(scope='module')
def tiny(mock_dataset):
    return mock_dataset(3, 1)[1]


@pytest.mark.parametrize('train', ['cnn', 'mixed'])
def test_training_on_a_tiny_dataset_fails_clearly_before_any_work(tiny, tmp_path, train):
    n = len(pd.read_hdf(tiny, 'source_info'))
    with pytest.raises(ValueError, match=rf'dataset has {n} spectra.*use more spectra'):
        C.run_cnn(tiny, tmp_path / 'run', 'smoke') if train == 'cnn' else run_mixed(tiny, tmp_path / 'run', 'main', 'smoke')
    assert not (tmp_path / 'run').exists() or not any((tmp_path / 'run').iterdir())


def test_predict_refuses_a_folder_as_output_before_the_work(s4, tmp_path, monkeypatch):
    d, _, h5, _ = s4
    monkeypatch.setattr(PR, 'load_bundle', lambda *a, **k: pytest.fail('work started before the output path was checked'))
    with pytest.raises(ValueError, match='folder'):
        predict(d / 'run' / 'models' / 'cnn_compact', h5, tmp_path, progress=False)
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(ValueError, match='afile'):
        predict(d / 'run' / 'models' / 'cnn_compact', h5, tmp_path / 'afile' / 'p.csv', progress=False)


def test_junk_h5_is_refused_clearly(s4, tmp_path):
    d, _, _, _ = s4
    junk = tmp_path / 'junk.h5'
    junk.write_bytes(b'this is not HDF5' * 100)
    with pytest.raises(ValueError, match='junk.h5'):
        predict(d / 'run' / 'models' / 'cnn_compact', junk, progress=False)
    with pytest.raises(ValueError, match='junk.h5'):
        load_task(junk, 'main')


def test_predict_on_unusable_spectra_is_an_error_and_writes_no_csv(s4, tmp_path):
    import pyarrow.parquet as pq, pyarrow as pa
    d, raw, _, _ = s4
    t = pq.read_table(raw).slice(0, 20)
    ivar = t.column('ivar').to_pylist()   # no usable pixel at all: nothing a model could read
    t = t.set_column(t.schema.get_field_index('ivar'), 'ivar', pa.array([[0.0] * len(v) for v in ivar], t.schema.field('ivar').type))
    bad = tmp_path / 'bad.parquet'
    pq.write_table(t, bad)
    with pytest.raises(ValueError, match='could be used'):
        predict(d / 'run' / 'models' / 'cnn_compact', bad, tmp_path / 'p.csv', progress=False)
    assert not (tmp_path / 'p.csv').exists()


def test_interrupted_training_leaves_the_old_models_intact(s4, tmp_path, monkeypatch):
    d, _, h5, _ = s4
    run = tmp_path / 'run'
    shutil.copytree(d / 'run', run)
    before = {p.relative_to(run): _sha(p) for p in run.rglob('*') if p.is_file()}
    def boom(*a, **k): raise RuntimeError('simulated crash while training the compact CNN')
    monkeypatch.setattr(C, 'build_compact_cnn', boom)
    with pytest.raises(RuntimeError, match='simulated'):
        C.run_cnn(h5, run, 'smoke', seed=3)
    after = {p.relative_to(run): _sha(p) for p in run.rglob('*') if p.is_file()}
    assert after == before                                  # old models and reports intact, nothing new or partial
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ['models']   # no tuner junk, no staging folder
    load_bundle(run / 'models' / 'cnn')


def test_a_bundle_marked_incomplete_is_refused(s4, tmp_path):
    d, _, h5, _ = s4
    path = tmp_path / 'm'
    shutil.copytree(d / 'run' / 'models' / 'cnn_compact', path)
    (path / '.incomplete').write_text('')
    with pytest.raises(ValueError, match='incomplete'):
        predict(path, h5, progress=False)


def test_training_logs_a_heartbeat_per_epoch(s4, caplog):
    d, _, h5, _ = s4
    data = load_task(h5, 'main', seed=1, spec=InputSpec())
    caplog.set_level(logging.INFO, logger='spectral_nb')
    seed_everything(1)
    fit_model(C.build_compact_cnn(3), data, 'cnn', 2, batch_size=64)
    lines = [r.getMessage() for r in caplog.records if 'epoch' in r.getMessage()]
    assert len(lines) == 2 and 'epoch 2/2' in lines[1] and 'spectra/s' in lines[1], lines


def test_augmented_training_is_seeded_and_only_touches_training_batches(s4):
    d, _, h5, _ = s4
    data = load_task(h5, 'main', seed=1, spec=InputSpec())
    x0 = augmented_inputs(data['train'], 'cnn', seed=5, epoch=0, chunk=32)
    assert x0.shape == data['train'].flux.shape == (data['train'].n, 3736, 1) and not np.allclose(x0, data['train'].flux)
    np.testing.assert_array_equal(x0, augmented_inputs(data['train'], 'cnn', seed=5, epoch=0, chunk=32))
    assert not np.allclose(x0, augmented_inputs(data['train'], 'cnn', seed=5, epoch=1, chunk=32))   # fresh each epoch
    hists = []
    for _ in range(2):
        seed_everything(7)
        hists.append(fit_model(C.build_compact_cnn(3), data, 'cnn', 1, augment=True, seed=7))
    assert hists[0]['loss'] == hists[1]['loss'] and hists[0]['augment'] is not None


@pytest.mark.parametrize('k,n', [(0, 10), (10, 10), (80, 100), (3, 7), (951, 1000)])
def test_wilson_is_scipys(k, n):
    from scipy.stats import binomtest
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method='wilson')
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_fit_epochs_stops_early_and_restores_the_best_weights():
    import keras
    seed_everything(3)
    x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]; y = (x[:, 0] > 0).astype(int)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation='softmax')])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss='sparse_categorical_crossentropy', metrics=['accuracy'])   # lr 0: no change
    seen = []
    hist = fit_epochs(model, lambda e: seen.append(e) or x, y, (x, y), epochs=20, batch_size=16, patience=3)
    assert seen == [0, 1, 2, 3] and len(hist['val_accuracy']) == 4   # no improvement after epoch 0: stops after 3 more
    w0 = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(5.0), loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    hist = fit_epochs(model, lambda e: x + np.float32(100 * (e % 2)), y, (x, y), epochs=4, batch_size=64, monitor='val_loss', patience=9)
    best = int(np.argmin(hist['val_loss']))
    assert len(hist['val_loss']) == 4 and model.evaluate(x, y, verbose=0)[0] == pytest.approx(hist['val_loss'][best], rel=1e-4)
