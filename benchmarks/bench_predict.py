"""Benchmark: inference throughput (spectra/s) of saved classifiers on CPU, end to end from a dataset.h5 and model call only.

Usage: .venv/bin/python benchmarks/bench_predict.py --run reports/quick [--h5 BIG/dataset.h5] [--models cnn cnn_compact mixed_main]
                                                   [--batches 1 1024] [--json OUT.json] [--repeat 3] [--jit 1 0]
Models are the run's bundles (RUN/*/models/NAME); the data is RUN/data/dataset.h5 unless --h5 names another dataset on the
same grid (e.g. a 191,000-spectrum mock, to see the fixed costs amortised). For each model and batch size:
- `stages`: where the time goes, each stage timed alone over the whole file in chunks of the largest batch: `read_fluxes`
  (the flux field alone, file opened per chunk), `read_chunks` (what predict reads: `chunks_h5`, whole table rows into one
  buffer and the source_info columns the predictions table needs), `prepare_flux` (the per-spectrum scale found from the
  fluxes) and `prepare_flux_stored_scale` (divided by the dataset's stored `flux_scale`, what predict does when it has one).
- `model_only`: the compiled predictor (`predictor_fn`, as predict builds it: standardisation in the graph, batch norm folded,
  pieces of at most --model-batch rows, default MODEL_BATCH = 256) on fluxes already prepared in memory, for each --jit
  setting (0: TensorFlow's graph executor, what predict uses; 1: XLA).
- `end_to_end_warm`: a `Predictor` already loaded and compiled applied to the whole file: reading, the per-spectrum scale in
  a background thread, the model, calibration, flag, novelty and the output table (what a survey-scale run sees per spectrum).
- `end_to_end`: `spectral_nb.predict.predict` from scratch on the whole file, so also loading the bundle and compiling.
Batch 1 is timed on --n1 spectra. Prints one JSON line per measurement; --json writes them all, with the machine, to a file.
"""
import argparse, json, os, platform, time
from pathlib import Path
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np, pandas as pd
from spectral_nb.dataset import read_fluxes
from spectral_nb.inputs import prepare_flux, feature_input
from spectral_nb.bundle import load_bundle, bundle_spec
from spectral_nb.predict import predict, predictions_table, Predictor, predictor_fn, chunks_h5, MODEL_BATCH

ap = argparse.ArgumentParser()
ap.add_argument('--run', type=Path, required=True)
ap.add_argument('--h5', type=Path, default=None, help='dataset to predict on (default RUN/data/dataset.h5)')
ap.add_argument('--models', nargs='+', default=['cnn', 'cnn_compact', 'mixed_main'])
ap.add_argument('--batches', nargs='+', type=int, default=[1, 1024])
ap.add_argument('--jit', nargs='+', type=int, default=[0], choices=[0, 1], help='model_only with XLA (1) and/or without (0)')
ap.add_argument('--n1', type=int, default=300, help='spectra timed at batch size 1')
ap.add_argument('--model-batch', type=int, default=MODEL_BATCH, help='rows per model call in model_only (predict uses MODEL_BATCH)')
ap.add_argument('--max-model-rows', type=int, default=50_000, help='rows kept in memory for model_only')
ap.add_argument('--repeat', type=int, default=3)
ap.add_argument('--json', type=Path, default=None, help='write every measurement to this JSON file')
a = ap.parse_args()
h5 = a.h5 or a.run / 'data' / 'dataset.h5'
info = pd.read_hdf(h5, 'source_info'); N = len(info)
chunk = max(a.batches)
rows = []
def emit(**r):
    print(json.dumps(r), flush=True); rows.append(r)

def best(f, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)

def each_chunk(f):
    for s in range(0, N, chunk): f(s, min(s + chunk, N))

def held(s, e):
    "Rows of the in-memory copy (the file's first n_mem rows) standing for file rows [s, e): wrapped around, never past its end."
    return np.arange(s, e) % n_mem

t = best(lambda: each_chunk(lambda s, e: read_fluxes(h5, s, e)), a.repeat)
emit(stage='read_fluxes', chunk=chunk, spectra=N, spectra_per_s=round(N / t))
cols = [c for c in Predictor.INFO_COLUMNS if c in info]
t = best(lambda: sum(1 for _ in chunks_h5(h5, chunk, columns=cols)), a.repeat)
emit(stage='read_chunks', chunk=chunk, columns=cols, spectra=N, spectra_per_s=round(N / t))
n_mem = min(N, a.max_model_rows)
flux = read_fluxes(h5, 0, n_mem)
scale = info['flux_scale'].to_numpy(np.float32) if 'flux_scale' in info else None
for name in a.models:
    path = next(iter(sorted(a.run.glob(f'*/models/{name}'))), None)
    if path is None: emit(model=name, error='not found'); continue
    model, meta, sc = load_bundle(path)
    spec = bundle_spec(meta)
    t = best(lambda: each_chunk(lambda s, e: prepare_flux(flux[held(s, e)], spec)), a.repeat)
    emit(model=name, stage='prepare_flux', chunk=chunk, spectra=N, spectra_per_s=round(N / t))
    if scale is not None:
        t = best(lambda: each_chunk(lambda s, e: prepare_flux(flux[held(s, e)], spec, scale=scale[held(s, e)])), a.repeat)
        emit(model=name, stage='prepare_flux_stored_scale', chunk=chunk, spectra=N, spectra_per_s=round(N / t))
    P = prepare_flux(flux, spec); F = feature_input(info.iloc[:n_mem], spec, sc)
    for bs in a.batches:
        for jit in a.jit:
            mb = min(bs, a.model_batch)   # predict reads chunks of bs rows and calls the model on pieces of at most MODEL_BATCH
            run = predictor_fn(model, meta['kind'], spec, sc, jit=bool(jit), batch=mb)
            n = min(n_mem, a.n1) if bs == 1 else n_mem
            run(P[:mb], F[:mb]); run(P[:n % mb or mb], F[:n % mb or mb])     # trace the shapes used below
            if bs == 1:
                t = best(lambda: [run(P[i:i + 1], F[i:i + 1]) for i in range(n)], 1)
            else:
                t = best(lambda: run(P[:n], F[:n]), a.repeat)
            emit(model=name, kind=meta['kind'], n_params=model.count_params(), batch=bs, model_batch=mb, jit=bool(jit), measure='model_only', spectra=n,
                 spectra_per_s=round(n / t, 1))
        if bs > 1:
            pr = Predictor(path); pr.check_data(h5)
            pr.table(info.iloc[:bs], flux[:bs], batch_size=bs)                    # load and compile once
            t = best(lambda: predictions_table(*pr.apply(h5, 'h5', bs), N, h5), a.repeat)
            emit(model=name, kind=meta['kind'], batch=bs, measure='end_to_end_warm', spectra=N, spectra_per_s=round(N / t, 1))
            t = best(lambda: predict(path, h5, batch_size=bs, progress=False), 1)
            emit(model=name, kind=meta['kind'], batch=bs, measure='end_to_end', spectra=N, seconds=round(t, 2), spectra_per_s=round(N / t, 1))
if a.json:
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(dict(run=str(a.run), h5=str(h5), machine=dict(cpus=os.cpu_count(), processor=platform.processor() or platform.machine(),
                                                                              python=platform.python_version()), results=rows), indent=1))
