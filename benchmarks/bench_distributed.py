"""Benchmark: preprocess and predict in one process vs on a local Dask cluster of 1 and 2 worker processes.

Usage: .venv/bin/python benchmarks/bench_distributed.py --n 20000 --parts 8 [--work DIR] [--workers 1 2]
Makes the mock survey (not timed; kept in --work and reused when it holds --n spectra), cuts it into --parts raw-record
files, and fits a stand-in compact CNN for one epoch on 2,000 of them (inference costs the same whatever the weights).
Then times, on the same files:
  preprocess  one process on the whole file  vs  preprocess_parts on the parts (cluster already started)
  writing     the client's serial share alone: write_dataset fed with chunks processed beforehand (order, split, scaler, HDF5)
  predict     one process on the whole file  vs  predict_parts on the parts: 'cold' (first call: each worker imports
              TensorFlow and loads the model) and 'warm' (second call)
and checks that every Dask output equals the one-process output (dataset content hash; largest probability difference).
Prints one JSON object. Check that the machine is idle first (`cat /proc/loadavg`): the workers share its cores.
"""
import argparse, json, os, resource, sys, tempfile, time
from pathlib import Path
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def rss_mb() -> float:
    "Peak resident memory of this process (MB): VmHWM, which starts afresh in a spawned worker (ru_maxrss would carry the parent's over)."
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'): return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def stand_in_bundle(h5: Path, out: Path) -> Path:
    "A compact CNN fitted for one epoch on up to 2,000 spectra, with a temperature, flag threshold and novelty model attached."
    from spectral_nb.inputs import InputSpec
    from spectral_nb.fit import load_task, seed_everything
    from spectral_nb.bundle import save_bundle, attach_calibration, fit_novelty, embedding_model
    from spectral_nb.cnn import build_compact_cnn
    from spectral_nb.config import CLASSES
    seed_everything(1)
    data = load_task(h5, 'main', InputSpec(), max_rows=2000)
    model = build_compact_cnn(len(CLASSES))
    model.fit(data['train'].flux, data['train'].y, epochs=1, batch_size=64, verbose=0)
    emb = embedding_model(model).predict(data['train'].flux, verbose=0)[1]
    attach_calibration(model, {'temperature': 1.3}, {'threshold': 0.6, 'novelty_threshold': 3.0}, fit_novelty(emb, data['train'].y, len(CLASSES)))
    return save_bundle(out, model, 'cnn', 'main', CLASSES, data['scaler'], data['spec'])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=20000)
    ap.add_argument('--parts', type=int, default=8)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--workers', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--work', type=Path, default=None, help='folder for the mock survey and outputs (kept; default: a temporary one)')
    a = ap.parse_args()
    import numpy as np, pandas as pd
    from spectral_nb.mock import write_mock
    from spectral_nb.records import count_records
    from spectral_nb.preprocess import preprocess, processed_chunks, write_dataset
    from spectral_nb.dataset import dataset_hash
    from spectral_nb.predict import predict
    from spectral_nb import distributed as D

    work = a.work or Path(tempfile.mkdtemp())
    raw = work / 'mock' / 'raw.parquet'
    made = work / 'mock' / 'made_with.json'     # the mock keeps fewer records than asked for (fits with zWarning != 0 are dropped)
    if not (raw.exists() and made.exists() and json.loads(made.read_text()) == dict(n=a.n, seed=a.seed)):
        raw = write_mock(work / 'mock', a.n, a.seed, progress=False); made.write_text(json.dumps(dict(n=a.n, seed=a.seed)))
    n = count_records(raw)
    parts = D.split_records(raw, work / 'parts', a.parts)
    res = dict(bench='distributed', n=n, parts=a.parts, cores=os.cpu_count(), loadavg_before=os.getloadavg()[0])

    t = time.perf_counter(); s1 = preprocess(raw, work / 'one.h5', progress=False); t1 = time.perf_counter() - t
    h1 = dataset_hash(work / 'one.h5')
    res['h5_bytes_per_spectrum'] = round((work / 'one.h5').stat().st_size / s1.n_out)
    res['raw_bytes_per_spectrum'] = round(sum(p.stat().st_size for p in parts) / n)
    info = pd.read_hdf(work / 'one.h5', 'source_info')
    res['source_info_memory_bytes_per_spectrum'] = round(info.memory_usage(deep=True).sum() / len(info))
    # the client's serial share: write_dataset (HDF5 appends, split, scaler re-read) fed with chunks processed beforehand
    chunks = list(processed_chunks(raw))
    t = time.perf_counter(); write_dataset(iter(chunks), work / 'serial.h5', progress=False); tw = time.perf_counter() - t
    del chunks
    res['client_write_dataset'] = dict(seconds=round(tw, 2), spectra_per_s=round(n / tw, 1), same_dataset=dataset_hash(work / 'serial.h5') == h1)
    res['preprocess'] = {'one_process': dict(seconds=round(t1, 2), spectra_per_s=round(n / t1, 1))}
    bundle = stand_in_bundle(work / 'one.h5', work / 'models' / 'cnn')
    t = time.perf_counter(); p1 = predict(bundle, raw, progress=False); t1p = time.perf_counter() - t
    res['predict'] = {'one_process': dict(seconds=round(t1p, 2), spectra_per_s=round(n / t1p, 1))}
    res['client_peak_rss_mb_one_process'] = rss_mb()

    for w in a.workers:
        t = time.perf_counter(); client = D.client_for(None, w); t_start = time.perf_counter() - t
        try:
            out = work / f'dask{w}.h5'
            t = time.perf_counter(); D.preprocess_parts(parts, out, client=client, progress=False); tp = time.perf_counter() - t
            same = dataset_hash(out) == h1
            times = []
            for _ in range(2):
                t = time.perf_counter(); pw = D.predict_parts(bundle, parts, client=client, progress=False); times.append(time.perf_counter() - t)
            num = [c for c in p1 if c.startswith('prob_')]
            diff = float(np.abs(pw[num].to_numpy() - p1[num].to_numpy()).max())
            same_cols = bool(pw.drop(columns=num + ['novelty']).equals(p1.drop(columns=num + ['novelty'])))
            worker_rss = client.run(rss_mb)
        finally:
            client.close()
        k = f'dask_{w}_worker' + ('s' if w > 1 else '')
        res['preprocess'][k] = dict(seconds=round(tp, 2), spectra_per_s=round(n / tp, 1), same_dataset=same, cluster_start_s=round(t_start, 2))
        res['predict'][k] = dict(cold_seconds=round(times[0], 2), warm_seconds=round(times[1], 2), spectra_per_s_warm=round(n / times[1], 1),
                                 max_prob_diff=diff, same_ids_flags_classes=same_cols)
        res[f'worker_peak_rss_mb_{w}'] = round(max(worker_rss.values()), 1)
    for stage in ('preprocess', 'predict'):
        r = res[stage]; key = 'seconds' if stage == 'preprocess' else 'warm_seconds'
        if 'dask_1_worker' in r and 'dask_2_workers' in r: r['speedup_1_to_2_workers'] = round(r['dask_1_worker'][key] / r['dask_2_workers'][key], 2)
    res['client_peak_rss_mb'] = rss_mb()
    res['loadavg_after'] = os.getloadavg()[0]
    print(json.dumps(res))


if __name__ == '__main__':   # worker processes are spawned: they import this file, so the work runs only in the main one
    main()
