"""Benchmark: throughput (spectra/s) of the template fit of nbs/08c_template_fit.ipynb (PCA eigen-templates + chi2 redshift scan).

Usage: .venv/bin/python benchmarks/bench_baselines.py --data DATASET.h5 [--json OUT.json] [--max-train 300] [--n 1000] [--batch 64]
Templates are built from the training split (at most --max-train spectra per class and star group) and the normal matrices
inverted before timing; the timed part is fit_templates on up to --n test-split spectra (after an 8-spectrum warm-up).
Prints one JSON line: spectra per wall-clock second and per CPU second of this process, the template-building time, and the
1-minute load average (the machine may be shared, which lowers the wall-clock rate).
"""
import argparse, json, os, time
from pathlib import Path
import numpy as np, pandas as pd
from spectral_nb.template_fit import build_templates, design, fit_templates
from spectral_nb.dataset import check_dataset, read_fluxes

ap = argparse.ArgumentParser()
ap.add_argument('--data', type=Path, required=True)
ap.add_argument('--json', type=Path, default=None, help='also write the result to this file')
ap.add_argument('--max-train', type=int, default=300, help='training spectra per class for the templates')
ap.add_argument('--n', type=int, default=1000, help='test spectra timed')
ap.add_argument('--batch', type=int, default=64)
ap.add_argument('--components', type=int, default=8)
ap.add_argument('--poly', type=int, default=3)
a = ap.parse_args()
h5 = check_dataset(a.data)
info = pd.read_hdf(h5, 'source_info'); flux = read_fluxes(h5)
tr = np.flatnonzero((info['split'] == 'train').to_numpy()); te = np.flatnonzero((info['split'] == 'test').to_numpy())[:a.n]
t0 = time.perf_counter()
designs = [design(s, a.poly) for s in build_templates(flux[tr], info.iloc[tr], k=a.components, max_per_class=a.max_train)]
build = time.perf_counter() - t0
fit_templates(flux[te[:8]], designs, batch=a.batch)
w, c = time.perf_counter(), time.process_time()
fit = fit_templates(flux[te], designs, batch=a.batch)
wall, cpu = time.perf_counter() - w, time.process_time() - c
acc = float((fit['template_class'].to_numpy() == info['label_main'].to_numpy()[te]).mean())
out = dict(benchmark='template_fit', data=str(h5), spectra=len(te), spectra_per_s=round(len(te) / wall, 1), spectra_per_cpu_s=round(len(te) / cpu, 1),
           build_seconds=round(build, 2), templates=len(designs), accuracy=round(acc, 4), batch=a.batch, components=a.components, poly=a.poly,
           cpu_count=os.cpu_count(), load_average_1min=round(os.getloadavg()[0], 2))
print(json.dumps(out), flush=True)
if a.json: a.json.write_text(json.dumps(out, indent=1))
