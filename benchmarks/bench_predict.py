"""Benchmark: inference throughput (spectra/s) of saved classifiers on CPU, end to end from dataset.h5 and model call only.

Usage: .venv/bin/python benchmarks/bench_predict.py --run reports/quick [--models cnn cnn_compact mixed_main]
                                                   [--batches 1 256 1024 4096] [--json OUT.json] [--repeat 3]
For each model and batch size:
- `end_to_end`: `spectral_nb.training.predict` on RUN/data/dataset.h5 (every row: reading the HDF5 table, the per-spectrum
  scale, the standardisation and the model in one XLA graph, calibration, flag, novelty, the output table); best of --repeat.
- `model_only`: the compiled predictor on arrays already in memory (`_predictor`, as predict builds it).
- `stages`: where predict's time goes, each stage timed alone over the whole file: HDF5 read, per-spectrum scale
  (`prepare_flux`), model call.
Batch 1 is timed on --n1 spectra. Prints one JSON line per measurement; --json writes them all, with the machine, to a file.
"""
import argparse, json, os, platform, time
from pathlib import Path
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np, pandas as pd
from spectral_nb.preprocess import read_fluxes
from spectral_nb.training import load_bundle, bundle_spec, prepare_flux, feature_input, predict, _predictor

ap = argparse.ArgumentParser()
ap.add_argument('--run', type=Path, required=True)
ap.add_argument('--models', nargs='+', default=['cnn', 'cnn_compact', 'mixed_main'])
ap.add_argument('--batches', nargs='+', type=int, default=[1, 1024])
ap.add_argument('--n1', type=int, default=300, help='spectra timed at batch size 1')
ap.add_argument('--repeat', type=int, default=3)
ap.add_argument('--json', type=Path, default=None, help='write every measurement to this JSON file')
a = ap.parse_args()
h5 = a.run / 'data' / 'dataset.h5'
info = pd.read_hdf(h5, 'source_info')
rows = []
def emit(**r):
    print(json.dumps(r), flush=True); rows.append(r)

def best(f, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)

t = best(lambda: read_fluxes(h5), a.repeat)
flux = read_fluxes(h5)
emit(stage='hdf5_read', spectra=len(flux), spectra_per_s=round(len(flux) / t))
for name in a.models:
    path = next(iter(sorted(a.run.glob(f'*/models/{name}'))), None)
    if path is None: emit(model=name, error='not found'); continue
    model, meta, sc = load_bundle(path)
    spec = bundle_spec(meta)
    t = best(lambda: prepare_flux(flux, spec), a.repeat)
    P = prepare_flux(flux, spec); F = feature_input(info, spec, sc)
    emit(model=name, stage='prepare_flux', spectra=len(P), spectra_per_s=round(len(P) / t))
    for bs in a.batches:
        run = _predictor(model, meta['kind'], spec, sc, batch=bs)
        n = min(len(P), a.n1) if bs == 1 else len(P)
        run(P[:bs], F[:bs]); run(P[:n % bs or bs], F[:n % bs or bs])     # compile the shapes used below
        if bs == 1:
            t = best(lambda: [run(P[i:i + 1], F[i:i + 1]) for i in range(n)], 1)
        else:
            t = best(lambda: run(P[:n], F[:n]), a.repeat)
        emit(model=name, kind=meta['kind'], n_params=model.count_params(), batch=bs, measure='model_only', spectra=n, spectra_per_s=round(n / t, 1))
        if bs > 1:
            predict(path, h5, batch_size=bs, progress=False)                  # warm: compile, page cache
            t = best(lambda: predict(path, h5, batch_size=bs, progress=False), a.repeat)
            emit(model=name, kind=meta['kind'], batch=bs, measure='end_to_end', spectra=len(info), spectra_per_s=round(len(info) / t, 1))
if a.json:
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(dict(run=str(a.run), machine=dict(cpus=os.cpu_count(), processor=platform.processor() or platform.machine(),
                                                                  python=platform.python_version()), results=rows), indent=1))
