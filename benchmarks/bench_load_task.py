"""Benchmark: loading one task of a dataset into memory (`fit.load_task(..., stream=False)`): wall time and peak RSS.

Usage: .venv/bin/python benchmarks/bench_load_task.py --h5 BIG/dataset.h5 [--task star] [--json OUT.json]
The task's flux rows are read with `read_flux_rows` (file opened once, block by block), standardised with a scaler fitted
on its training split. Prints one JSON line: rows per split, seconds, peak RSS of this process.
"""
import argparse, json, os, resource, time
from pathlib import Path
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
from spectral_nb.fit import load_task

ap = argparse.ArgumentParser()
ap.add_argument('--h5', type=Path, required=True)
ap.add_argument('--task', default='star', choices=['main', 'galaxy', 'star'])
ap.add_argument('--json', type=Path, default=None)
a = ap.parse_args()
t = time.perf_counter()
d = load_task(a.h5, a.task, stream=False)
r = dict(bench='load_task', h5=str(a.h5), task=a.task, rows={k: int(d[k].n) for k in ('train', 'val', 'test')},
         seconds=round(time.perf_counter() - t, 2), peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2))
print(json.dumps(r))
if a.json: a.json.write_text(json.dumps(r, indent=1))
