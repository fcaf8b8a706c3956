"Streamed training: H5Batches serves each row of a split once, with load_task's inputs, in a seeded order, one block read at a time; fit_streaming learns."
import sys
import numpy as np, pandas as pd, pytest
from spectral_nb.bundle import load_bundle
from spectral_nb.config import NPIX
from spectral_nb.dataset import Dataset
from spectral_nb.fit import load_task, seed_everything, fit_streaming
from spectral_nb.inputs import InputSpec
from spectral_nb.predict import predict
from spectral_nb import streaming as S

BLOCK = 128   # file rows per block: the 600-spectrum survey spans 5 blocks


@pytest.fixture(scope='module')
def h5(mock_dataset):
    return mock_dataset(600, 1)[1]


def _ids(ds):
    return [s for i in range(len(ds)) for s in ds.batch_info(i)['specObjID']]


def _served(ds):
    "specObjID -> (inputs, label) of every row served in one pass over `ds`."
    out = {}
    for i in range(len(ds)):
        x, y = ds[i]
        for k, s in enumerate(ds.batch_info(i)['specObjID']):
            assert s not in out, f'{s} served twice in one epoch'
            out[s] = ({n: v[k] for n, v in x.items()} if isinstance(x, dict) else x[k], y[k])
    return out


def test_one_epoch_serves_each_row_of_the_split_once_with_load_task_inputs(h5):
    ref = load_task(h5, 'main', spec=InputSpec())
    data = S.stream_task(h5, 'main', 'cnn', batch_size=32, block=BLOCK, augment=True)
    assert np.array_equal(data['scaler'].flux_mean, ref['scaler'].flux_mean) and np.array_equal(data['scaler'].flux_std, ref['scaler'].flux_std)
    assert data['spec'] == ref['spec']
    for split in ('train', 'val', 'test'):
        # the training batches of stream_task are augmented: compare an unaugmented twin for the exact inputs
        ds = S.H5Batches(h5, 'main', split, 'cnn', ref['spec'], ref['scaler'], batch_size=32, block=BLOCK) if split == 'train' else data[split]
        served, td = _served(ds), ref[split]
        assert sorted(served) == sorted(td.info['specObjID']), split         # every row of the split, nothing else
        assert len(ds.groups) > 1 and max(len(ds.batch_positions(i)) for i in range(len(ds))) <= 32
        for j, s in enumerate(td.info['specObjID']):
            x, y = served[s]
            assert np.allclose(x, td.flux[j], atol=1e-6) and y == td.y[j], (split, s)
    # the augmented training batches hold the same rows, with perturbed inputs
    aug = _served(data['train'])
    assert sorted(aug) == sorted(ref['train'].info['specObjID'])
    j = {s: i for i, s in enumerate(ref['train'].info['specObjID'])}
    changed = np.mean([not np.allclose(x, ref['train'].flux[j[s]], atol=1e-4) for s, (x, _) in aug.items()])
    assert changed > 0.5


def test_mixed_inputs_of_a_subclass_task(h5):
    ref = load_task(h5, 'galaxy')
    ds = S.H5Batches(h5, 'galaxy', 'val', 'mixed', ref['spec'], ref['scaler'], batch_size=16, block=BLOCK)
    served, td = _served(ds), ref['val']
    assert sorted(served) == sorted(td.info['specObjID'])
    assert set(pd.read_hdf(h5, 'source_info').set_index('specObjID').loc[list(served), 'label_main']) == {'GALAXY'}
    for j, s in enumerate(td.info['specObjID']):
        x, y = served[s]
        assert set(x) == {'flux', 'features'} and y == td.y[j]
        assert np.allclose(x['flux'], td.flux[j], atol=1e-6) and np.allclose(x['features'], td.feat[j], atol=1e-6)


def test_order_is_seeded_by_seed_and_epoch(h5):
    ref = load_task(h5, 'main', spec=InputSpec())
    mk = lambda seed, **kw: S.H5Batches(h5, 'main', 'train', 'cnn', ref['spec'], ref['scaler'], batch_size=32, block=BLOCK, seed=seed, **kw)
    a, b = mk(7), mk(7)
    e0 = _ids(a)
    assert _ids(b) == e0 and _ids(mk(8)) != e0                       # same seed, same order; another seed, another
    assert e0 != list(ref['train'].info['specObjID'])                 # shuffled, not file order
    a.on_epoch_end(); e1 = _ids(a)
    assert e1 != e0 and sorted(e1) == sorted(e0)                      # next epoch: new order, same rows
    b.set_epoch(1); assert _ids(b) == e1                              # the order is a function of (seed, epoch)
    with b.holding(3):
        e3 = _ids(b); b.on_epoch_end(); assert _ids(b) == e3           # held: Keras's on_epoch_end does not move it
    # augmentation: the same (seed, epoch) perturbs a row the same way; another epoch differently
    c, d = mk(7, augment=True), mk(7, augment=True)
    xc, xd = _served(c), _served(d)
    assert all(np.array_equal(xc[k][0], xd[k][0]) for k in xc)
    d.on_epoch_end(); xd1 = _served(d)
    assert np.mean([not np.array_equal(xc[k][0], xd1[k][0]) for k in xc]) > 0.5
    # validation batches are neither shuffled nor augmented
    v = S.stream_task(h5, 'main', 'cnn', scaler=ref['scaler'], block=BLOCK, augment=True)['val']
    assert _ids(v) == list(ref['val'].info['specObjID']) and v.augment is None


def test_reads_one_block_at_a_time(h5, monkeypatch):
    reads = []
    real = S._read_rows
    def spy(path, rows):
        rows = np.asarray(rows); reads.append((int(rows.min()), int(rows.max()), len(rows)))
        return real(path, rows)
    monkeypatch.setattr(S, '_read_rows', spy)
    def whole(*a, **k): raise AssertionError('the whole flux table, or all of the task\'s rows at once, was read')
    monkeypatch.setattr(Dataset, 'fluxes', whole)        # the in-memory loader's one read of all the task's rows
    for m in [m for k, m in sys.modules.items() if k.startswith('spectral_nb') and hasattr(m, 'read_fluxes')]:
        monkeypatch.setattr(m, 'read_fluxes', whole)     # and the whole table, wherever a module reads it from
    monkeypatch.setattr(S.H5Batches, '__getitem__', _no_two_blocks(S.H5Batches.__getitem__))
    data = S.stream_task(h5, 'main', 'cnn', batch_size=32, block=BLOCK, augment=True)    # scaler fitted from blocks too
    assert reads and all(lo // BLOCK == hi // BLOCK for lo, hi, _ in reads)
    reads.clear()
    seed_everything(0)
    model = _tiny(len(data['classes']))
    hist = fit_streaming(model, data, epochs=2, patience=5)
    tr, va = data['train'], data['val']
    assert reads and all(lo // BLOCK == hi // BLOCK and n <= BLOCK for lo, hi, n in reads)
    # each block read once per epoch; under load Keras's prefetch thread may ask for a batch across a block edge once an epoch
    assert hist['block_reads'] == tr.reads and 2 * len(tr.groups) <= tr.reads <= 2 * (len(tr.groups) + 1)
    assert len(reads) == tr.reads + va.reads


def _no_two_blocks(getitem):
    "Wrap __getitem__: the dataset never holds more than one block."
    def f(self, i):
        out = getitem(self, i)
        assert self._cache[0] is not None and len(self._cache[1][0]) == len(self.groups[self._cache[0][0]])
        return out
    return f


def _tiny(k):
    import keras
    from keras import layers
    inp = keras.Input((NPIX, 1), name='flux')
    x = layers.Conv1D(8, 9, strides=4, activation='relu')(inp)
    x = layers.Conv1D(16, 9, strides=4, activation='relu')(x)
    x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    m = keras.Model(inp, layers.Dense(k, activation='softmax', name='probs')(x))
    m.compile(optimizer=keras.optimizers.Adam(3e-3), loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    return m


def test_fit_streaming_learns(h5):
    seed_everything(0)
    data = S.stream_task(h5, 'main', 'cnn', batch_size=32, block=BLOCK, augment=True, class_weight='sqrt')
    model = _tiny(len(data['classes']))
    hist = fit_streaming(model, data, epochs=8, patience=8)
    te = data['test']
    acc = float((S.predict_streaming(model, te).argmax(1) == te.y).mean())
    majority = np.bincount(te.y).max() / te.n
    assert acc > majority + 0.15, (acc, majority)
    assert max(hist['val_accuracy']) > np.bincount(data['val'].y).max() / data['val'].n + 0.15
    # best weights restored: the model's validation accuracy is the best epoch's
    va = data['val']
    assert np.isclose((S.predict_streaming(model, va).argmax(1) == va.y).mean(), max(hist['val_accuracy']), atol=1e-6)


def test_worker_threads_get_their_own_blocks(h5):
    "With Keras worker threads (workers > 1) batches are fetched concurrently: each still gets its own rows' inputs."
    from concurrent.futures import ThreadPoolExecutor
    ref = load_task(h5, 'main', spec=InputSpec())
    ds = S.H5Batches(h5, 'main', 'train', 'cnn', ref['spec'], ref['scaler'], batch_size=16, block=BLOCK, seed=3)
    j = {s: i for i, s in enumerate(ref['train'].info['specObjID'])}
    idx = list(range(len(ds))) * 2
    np.random.default_rng(0).shuffle(idx)
    with ThreadPoolExecutor(4) as ex: got = list(ex.map(ds.__getitem__, idx))
    for i, (x, y) in zip(idx, got):
        rows = [j[s] for s in ds.batch_info(i)['specObjID']]
        assert np.array_equal(x, ref['train'].flux[rows]) and np.array_equal(y, ref['train'].y[rows]), i


def _test_accuracy_by_predict(path, h5):
    "Test accuracy of a saved bundle applied by `predict` (the path users take), for comparison with its recorded metrics."
    p = predict(path, h5, progress=False)
    te = p[p['split'] == 'test']
    return len(te), float((te['predicted'] == te['label_main']).mean())


def test_compact_cnn_trains_streamed_when_the_task_does_not_fit_in_memory(h5, tmp_path, monkeypatch):
    "train_compact_cnn(stream=None) streams when memory is short; the saved model is reported, and predicts like its report says."
    from spectral_nb.cnn import train_compact_cnn
    monkeypatch.delenv('SPECTRAL_NB_STREAM', raising=False)
    monkeypatch.setattr(S, 'memory_available', lambda: 20_000_000)   # 20 MB: the 600-spectrum task needs ~40 MB in memory
    read = []
    real = S._read_rows
    monkeypatch.setattr(S, '_read_rows', lambda *a, **k: read.append(1) or real(*a, **k))
    path, m = train_compact_cnn(h5, tmp_path / 'cnn', epochs=5, figures=False)
    assert m['streamed'] is True and m['history']['block_reads'] >= len(m['history']['loss']) and read
    assert m['accuracy'] > m['majority_baseline'] + 0.1, m['accuracy']
    n, acc = _test_accuracy_by_predict(path, h5)
    assert n == m['n_test'] and abs(acc - m['accuracy']) < 1e-9
    ref = load_task(h5, 'main', spec=InputSpec())   # the same rows and scaler as in memory
    assert m['n_train'] == ref['train'].n and m['n_test'] == ref['test'].n
    meta = load_bundle(path)[1]
    assert meta['calibration']['temperature'] > 0 and meta['novelty']


def test_mixed_input_trains_streamed_on_request(h5, tmp_path):
    from spectral_nb.mixed import train_mixed
    path, m = train_mixed(h5, tmp_path / 'mixed', 'main', epochs=3, figures=False, stream=True)
    assert m['history']['block_reads'] > 0
    n, acc = _test_accuracy_by_predict(path, h5)
    assert n == m['n_test'] and abs(acc - m['accuracy']) < 1e-9


def test_cnn_stage_searches_and_trains_streamed(h5, tmp_path):
    "run_cnn(stream=True): the keras-tuner search, the retrained tuned CNN and the compact CNN all read the file a block at a time."
    from spectral_nb.cnn import run_cnn
    res = run_cnn(h5, tmp_path / 'cnn', 'smoke', stream=True)
    for name in ('cnn', 'cnn_compact'):
        m = res[name]
        assert m['streamed'] is True and m['history']['block_reads'] > 0, name
        n, acc = _test_accuracy_by_predict(tmp_path / 'cnn' / 'models' / name, h5)
        assert n == m['n_test'] and abs(acc - m['accuracy']) < 1e-9, name
    assert res['cnn']['tuner_trials'] == 2 and (tmp_path / 'cnn' / 'cnn_tuner_trials.csv').exists()


def test_redshift_network_streams_when_memory_is_short(h5, tmp_path, monkeypatch):
    "train_redshift_cnn streams by itself when the task would not fit (redshift bins as the batches' targets); its bundle, applied by predict_redshift, gives the test predictions it recorded."
    from spectral_nb.redshift import train_redshift_cnn, predict_redshift
    monkeypatch.setattr(S, 'memory_available', lambda: 20_000_000)
    path, m = train_redshift_cnn(h5, tmp_path / 'z', epochs=2)
    assert m['streamed'] is True and m['history']['block_reads'] > 0 and m['epochs'] == 2
    rec = pd.read_csv(tmp_path / 'z' / 'redshift_cnn_compact_z.csv')
    assert len(rec) == m['n_test'] and np.isfinite(rec['z_pred']).all()
    got = predict_redshift(path, h5).set_index('specObjID').loc[rec['specObjID']]
    np.testing.assert_allclose(got['z_pred'].to_numpy(), rec['z_pred'].to_numpy(), rtol=1e-5, atol=1e-6)


def test_training_blanks_the_catalogue_columns_of_some_rows_in_both_paths(h5):
    "Augmentation hides photometry and zErr (never z or the EWs) of a share of training rows, streamed or in memory, as spectra without a catalogue row have them."
    from spectral_nb.fit import augmented_inputs
    from spectral_nb.inputs import Augment, CATALOGUE_ONLY
    ref = load_task(h5, 'main')
    cols = list(ref['spec'].feature_columns)
    cat = [cols.index(c) for c in cols if c in CATALOGUE_ONLY]
    keep = [cols.index(c) for c in cols if c not in CATALOGUE_ONLY]
    assert cat and keep and 'z' in cols
    td = ref['train']
    aug = Augment(noise=0, shift=0, tilt=0, sky=0, brightness=0, gap=0, no_catalogue=0.5)
    F = augmented_inputs(td, 'mixed', seed=3, epoch=0, cfg=aug)['features']
    blank = (F[:, cat] == 0).all(1) & ~(td.feat[:, cat] == 0).all(1)
    assert 0.3 < blank.mean() < 0.7 and np.array_equal(F[:, keep], td.feat[:, keep])
    ds = S.H5Batches(h5, 'main', 'train', 'mixed', ref['spec'], ref['scaler'], batch_size=32, block=BLOCK, augment=aug)
    served = _served(ds)
    by_id = dict(zip(td.info['specObjID'], td.feat))
    sb = np.array([(x['features'][cat] == 0).all() for x, _ in served.values()])
    assert 0.3 < sb.mean() < 0.7
    assert all(np.allclose(x['features'][keep], by_id[s][keep], atol=1e-6) for s, (x, _) in served.items())
