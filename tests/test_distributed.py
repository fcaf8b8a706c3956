"Dask runs: preprocess and predict over input parts on a cluster give what one process gives; a bad scheduler is refused with the fix."
import glob, json, socket
from dataclasses import asdict
from pathlib import Path
import numpy as np, pandas as pd, pytest
import ppxf
from spectral_nb import distributed as D
from spectral_nb.cli import main
from spectral_nb.config import CLASSES
from spectral_nb.preprocess import preprocess
from spectral_nb.dataset import read_fluxes, read_dataset_scaler, read_dataset_summary, dataset_hash
from spectral_nb.sdssfiles import BadSpectrumError

TIMING = ('seconds', 'spectra_per_s')   # the summary fields that time the run: the only ones that may differ
FIXTURES = sorted(glob.glob(str(Path(ppxf.__file__).parent / 'spectra' / '*_SDSS_DR18.fits')))


@pytest.fixture(scope='module')
def cluster():
    "A local cluster of two worker processes, reached by its address as a remote one would be (`scheduler=`)."
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=':0', env=D.worker_env(1)) as c, Client(c) as client:
        warm = [client.submit(lambda: __import__('tensorflow') and None, pure=False, workers=[w], allow_other_workers=False)
                for w in client.nthreads()]      # the workers import TensorFlow (for predict) while the survey is made
        yield c.scheduler_address
        del warm


@pytest.fixture(scope='module')
def survey(tmp_path_factory, cluster, mock_dataset):   # the cluster first: its workers import TensorFlow meanwhile
    "A folder for this file's outputs, a mock survey, the same records in three part files of several row groups each, and its one-process dataset."
    d = tmp_path_factory.mktemp('survey')
    raw, one = mock_dataset(200, 13)  # a seed whose survey has spectra preprocessing drops (missing flux)
    parts = D.split_records(raw, d / 'parts', 3, row_group_size=30)
    return d, raw, parts, one


def assert_same_dataset(a, b):
    "Two dataset files with the same content: fluxes bit for bit, source_info (split included), wavelengths, scaler, summary but its timing."
    np.testing.assert_array_equal(read_fluxes(a), read_fluxes(b))
    ia, ib = pd.read_hdf(a, 'source_info'), pd.read_hdf(b, 'source_info')
    pd.testing.assert_frame_equal(ia, ib, check_exact=True)
    assert ia.equals(ib) and (ia['split'] == ib['split']).all()
    pd.testing.assert_frame_equal(pd.read_hdf(a, 'wavelengths'), pd.read_hdf(b, 'wavelengths'), check_exact=True)
    assert read_dataset_scaler(a) == read_dataset_scaler(b)
    sa, sb = read_dataset_summary(a), read_dataset_summary(b)
    assert {k: v for k, v in sa.items() if k not in TIMING} == {k: v for k, v in sb.items() if k not in TIMING}
    assert dataset_hash(a) == dataset_hash(b)


def test_parts_are_cut_into_tasks_of_whole_row_groups_in_order(survey):
    _, raw, parts, one = survey
    tasks = D.plan_tasks(parts, rows_per_task=50)
    assert len(tasks) > len(parts)                                  # each part is shared out, not only the files
    assert sum(t.n for t in tasks) == read_dataset_summary(one)['n_in']
    assert [(t.path, t.start) for t in tasks] == sorted((t.path, t.start) for t in tasks)
    assert pd.concat([pd.read_parquet(p, columns=['specObjID']) for p in parts], ignore_index=True).equals(
        pd.read_parquet(raw, columns=['specObjID']))


def test_dask_preprocess_of_parts_writes_the_one_process_dataset(survey, cluster):
    d, raw, parts, one = survey
    many = D.preprocess_parts(parts, d / 'many.h5', scheduler=cluster, rows_per_task=50, progress=False)
    assert_same_dataset(d / 'many.h5', one)
    plain = lambda s: {k: v for k, v in json.loads(json.dumps(s)).items() if k not in TIMING}   # as the dataset file stores it
    assert plain(asdict(many)) == plain(read_dataset_summary(one))
    assert many.dropped and many.n_out < many.n_in                  # the comparison covers dropped spectra too
    for f in ('many.scaler.json', 'many.summary.json'): assert (d / f).is_file()
    assert json.loads((d / 'many.scaler.json').read_text()) == json.loads(one.with_name(f'{one.stem}.scaler.json').read_text())


def test_the_comparison_sees_a_different_order(survey, cluster):
    "Parts in another order give the same spectra in another order: a dataset the checks above refuse."
    d, _, parts, one = survey
    D.preprocess_parts(parts[::-1], d / 'reversed.h5', scheduler=cluster, rows_per_task=50, progress=False)
    ir, io = pd.read_hdf(d / 'reversed.h5', 'source_info'), pd.read_hdf(one, 'source_info')
    assert sorted(ir['specObjID']) == sorted(io['specObjID'])
    with pytest.raises(AssertionError): assert_same_dataset(d / 'reversed.h5', one)


def test_raw_parts_and_spec_files_as_one_process_counts_unreadable_files(survey, cluster, tmp_path):
    _, raw, parts, _ = survey
    junk = tmp_path / 'spec-0000-00000-0000.fits'; junk.write_bytes(b'not a FITS file' * 50)
    files = [*FIXTURES, str(junk)]
    one = preprocess(raw, tmp_path / 'one.h5', fits_files=files, progress=False)
    D.preprocess_parts([*parts, files], tmp_path / 'many.h5', scheduler=cluster, files_per_task=1, progress=False)
    assert one.dropped.get('corrupt_fits') == 1 and 'sdss' in one.source
    assert_same_dataset(tmp_path / 'many.h5', tmp_path / 'one.h5')


def test_a_refused_chunk_stops_the_cluster_run_and_leaves_no_file(survey, cluster):
    d, _, parts, _ = survey
    with pytest.raises(BadSpectrumError, match="on_bad='skip'"):
        D.preprocess_parts(parts, d / 'strict.h5', scheduler=cluster, on_bad='raise', rows_per_task=50, progress=False)
    assert not (d / 'strict.h5').exists() and not list(d.glob('.strict.h5.*'))


def test_cli_preprocess_of_several_raw_files_on_a_local_cluster(survey):
    d, _, parts, one = survey
    assert main(['-q', 'preprocess', '--raw', *map(str, parts), '--workers', '2', '--out', str(d / 'cli.h5')]) == 0
    assert_same_dataset(d / 'cli.h5', one)


@pytest.fixture(scope='module')
def bundle(survey):
    "A compact CNN fitted briefly on the survey, with a temperature, a flag threshold and a novelty model, saved as a bundle."
    from spectral_nb.fit import load_task, seed_everything
    from spectral_nb.inputs import InputSpec
    from spectral_nb.bundle import save_bundle, attach_calibration, fit_novelty, embedding_model
    from spectral_nb.cnn import build_compact_cnn
    d, _, _, one = survey
    seed_everything(1)
    data = load_task(one, 'main', spec=InputSpec())
    model = build_compact_cnn(len(CLASSES))
    model.fit(data['train'].flux, data['train'].y, epochs=6, batch_size=32, verbose=0)
    emb = embedding_model(model).predict(data['train'].flux, verbose=0)[1]
    attach_calibration(model, {'temperature': 1.3}, {'threshold': 0.6, 'novelty_threshold': 3.0},
                       fit_novelty(emb, data['train'].y, len(CLASSES)))
    return save_bundle(d / 'models' / 'cnn', model, 'cnn', 'main', CLASSES, data['scaler'], data['spec'])


def assert_same_predictions(a: pd.DataFrame, b: pd.DataFrame, atol: float = 1e-5, rtol: float = 1e-5):
    "Same columns, ids, labels, flags and predicted classes; class probabilities within `atol`, novelty scores within `rtol`."
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    num = [c for c in a if c.startswith('prob_') or c == 'novelty']
    pd.testing.assert_frame_equal(a.drop(columns=num), b.drop(columns=num), check_exact=True)
    assert (a['predicted'].fillna('') == b['predicted'].fillna('')).all() and (a['flag'].fillna(-1) == b['flag'].fillna(-1)).all()
    for c in num:   # float32 sums may be ordered differently with another number of TensorFlow threads: last bits only
        np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), **(dict(rtol=rtol) if c == 'novelty' else dict(rtol=0, atol=atol)), err_msg=c)


def test_dask_predict_equals_one_process_predict(survey, cluster, bundle, tmp_path):
    from distributed import Client
    from spectral_nb.predict import predict
    d, raw, parts, h5 = survey
    one = predict(bundle, h5, batch_size=32, progress=False)
    many = D.predict_parts(bundle, [h5], scheduler=cluster, batch_size=32, rows_per_task=64, progress=False)
    assert_same_predictions(many, one)
    assert one['flag'].nunique() == 2 and one['predicted'].nunique() > 1   # the comparison is not of constant columns
    one_raw = predict(bundle, raw, tmp_path / 'one.csv', progress=False)
    with Client(cluster) as c:
        before = c.run(lambda: {k: id(v) for k, v in D._PREDICTORS.items()})
        many_raw = D.predict_parts(bundle, parts, tmp_path / 'many.csv', client=c, rows_per_task=50, progress=False)
        assert c.run(lambda: {k: id(v) for k, v in D._PREDICTORS.items()}) == before   # each worker loaded the model once
    assert all(len(v) == 1 for v in before.values())
    assert_same_predictions(many_raw, one_raw)
    assert_same_predictions(pd.read_csv(tmp_path / 'many.csv'), pd.read_csv(tmp_path / 'one.csv'))
    assert main(['-q', 'predict', '--model', str(bundle), '--data', *map(str, parts), '--scheduler', cluster, '--out', str(tmp_path / 'cli.csv')]) == 0
    assert_same_predictions(pd.read_csv(tmp_path / 'cli.csv'), pd.read_csv(tmp_path / 'one.csv'))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_unreachable_or_malformed_scheduler_is_refused_with_the_fix(survey, capsys):
    import dask
    d, _, parts, _ = survey
    addr = f'tcp://127.0.0.1:{_free_port()}'                        # nothing listens there
    with pytest.raises(ConnectionError, match=r'No Dask scheduler answers at tcp://127\.0\.0\.1:\d+.*leave out --scheduler'):
        D.client_for(addr, timeout=1)
    with pytest.raises(ValueError, match=r'not a Dask scheduler address.*tcp://10\.0\.0\.5:8786'):
        D.client_for('127.0.0.1')
    with pytest.raises(FileNotFoundError, match='scheduler file'):
        D.client_for(str(d / 'scheduler.json'))
    with dask.config.set({'distributed.comm.timeouts.connect': '1s'}):
        assert main(['-q', 'preprocess', '--raw', *map(str, parts), '--scheduler', addr, '--out', str(d / 'x.h5')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'No Dask scheduler answers' in err and 'dask scheduler' in err
    assert not (d / 'x.h5').exists()
