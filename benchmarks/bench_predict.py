"""Benchmark: inference throughput (spectra/s) of saved classifiers at batch sizes 1 and 1024, on CPU.

Usage: .venv/bin/python benchmarks/bench_predict.py --run reports/quick [--models cnn cnn_compact mixed_main]
Uses the test split of RUN/data/dataset.h5 and the bundles under RUN/*/models/. The model is called in a tf.function
(as `spectral-nb predict` does). Prints one JSON line per model and batch size.
"""
import argparse, json, os, time
from pathlib import Path
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np, pandas as pd
from spectral_nb.training import load_bundle, load_task, _predictor

ap = argparse.ArgumentParser()
ap.add_argument('--run', type=Path, required=True)
ap.add_argument('--models', nargs='+', default=['cnn', 'cnn_compact', 'mixed_main'])
ap.add_argument('--n1', type=int, default=300, help='spectra timed at batch size 1')
a = ap.parse_args()
h5 = a.run / 'data' / 'dataset.h5'
te = load_task(h5, 'main')['test']
for name in a.models:
    path = next(iter(sorted(a.run.glob(f'*/models/{name}'))), None)
    if path is None: print(json.dumps(dict(model=name, error='not found'))); continue
    model, meta, sc = load_bundle(path)
    run = _predictor(model, meta['kind'])
    X, F = te.flux, te.feat
    for bs in (1, 1024):
        n = min(len(X), a.n1) if bs == 1 else len(X)
        run(X[:bs], F[:bs])                               # trace once
        reps = max(1, 3000 // n) if bs == 1024 else 1
        t = time.perf_counter()
        for _ in range(reps):
            for i in range(0, n, bs): run(X[i:i + bs], F[i:i + bs])
        dt = time.perf_counter() - t
        print(json.dumps(dict(model=name, kind=meta['kind'], n_params=model.count_params(), batch=bs, spectra=n * reps,
                              spectra_per_s=round(n * reps / dt, 1))), flush=True)
