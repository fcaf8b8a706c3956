"""Benchmark: time and memory of `spectral-nb mock` (the mock survey writer), and its determinism.

Usage: .venv/bin/python benchmarks/bench_mock.py --n 10000 --seed 1
Prints one JSON line: spectra, wall seconds, spectra/s, peak RSS (MB), file size (MB), sha256 of the flux column.
"""
import argparse, hashlib, json, resource, tempfile, time
from pathlib import Path
from spectral_nb.mock import write_mock
from spectral_nb.records import iter_records

ap = argparse.ArgumentParser()
ap.add_argument('--n', type=int, default=10000)
ap.add_argument('--seed', type=int, default=1)
ap.add_argument('--out', type=Path, default=None)
a = ap.parse_args()
out = a.out or Path(tempfile.mkdtemp())
t = time.perf_counter()
path = write_mock(out, a.n, a.seed, progress=False)
wall = time.perf_counter() - t
h = hashlib.sha256()
for _, pix in iter_records(path): h.update(pix['flux'].tobytes())
print(json.dumps(dict(bench='mock', n=a.n, seed=a.seed, wall_s=round(wall, 2), spectra_per_s=round(a.n / wall, 1),
                      peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      file_mb=round(path.stat().st_size / 1e6, 1), flux_sha256=h.hexdigest()[:16])))
