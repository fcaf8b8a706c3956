"""Benchmark: download throughput against the local fake SDSS with the thesis's 1-3 s latency per file.

Usage: .venv/bin/python benchmarks/bench_download.py [--latency 1 3] [--fault-rate 0]
For 1, 8 and 32 workers, downloads N files (N grows with the worker count so each run takes ~10-30 s) and prints one
JSON line per setting with spectra/s. The thesis's own rate was about 5,000 spectra in 8 hours (0.17 spectra/s).
"""
import argparse, json, tempfile, time
from pathlib import Path
import pandas as pd
from spectral_nb.fakesdss import FakeSDSS, sas_path, write_spec_fits
from spectral_nb.download import download
from spectral_nb.mock import generate

ap = argparse.ArgumentParser()
ap.add_argument('--latency', type=float, nargs=2, default=(1.0, 3.0))
ap.add_argument('--fault-rate', type=float, default=0.0)
ap.add_argument('--workers', type=int, nargs='+', default=[1, 8, 32])
a = ap.parse_args()
cat, pix = generate(320, seed=1)
cat['run2d'] = '26'
files = {}
for i in range(len(cat)):
    r = cat.iloc[i].to_dict()
    files[sas_path(r['plate'], r['mjd'], r['fiberID'], r['run2d'])] = write_spec_fits(r, {k: v[i] for k, v in pix.items()})
for w in a.workers:
    n = {1: 10, 8: 80}.get(w, 320)
    with FakeSDSS(files=files, faults=dict(latency=tuple(a.latency), rate=a.fault_rate, hang=10, seed=w)) as srv, tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        s = download(cat.iloc[:n], d, workers=w, sas_url=srv.sas_url, timeout=8, retries=5, backoff=0.2, progress=False)
        wall = time.perf_counter() - t
    print(json.dumps(dict(bench='download', workers=w, files=n, latency_s=list(a.latency), fault_rate=a.fault_rate, downloaded=s.downloaded,
                          failed=s.failed, retries=s.retries, wall_s=round(wall, 2), spectra_per_s=round(s.downloaded / wall, 2),
                          vs_thesis=round(s.downloaded / wall / (5000 / (8 * 3600)), 1))), flush=True)
