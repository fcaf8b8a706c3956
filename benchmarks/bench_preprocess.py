"""Benchmark: preprocessing throughput (spectra/s) and peak memory on mock raw records on the exact grid.

Usage: .venv/bin/python benchmarks/bench_preprocess.py --n 10000 [--raw PATH] [--sigma 0]
Makes the mock survey first if --raw is not given (not timed). Prints one JSON line.
Peak memory is measured in a fresh child process (ru_maxrss of the preprocessing alone).
"""
import argparse, json, resource, subprocess, sys, tempfile, time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument('--n', type=int, default=10000)
ap.add_argument('--seed', type=int, default=1)
ap.add_argument('--raw', type=Path, default=None)
ap.add_argument('--sigma', type=float, default=0.0)
ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
a = ap.parse_args()

if a.child:
    from spectral_nb.preprocess import preprocess
    out = Path(tempfile.mkdtemp()) / 'dataset.h5'
    s = preprocess(a.raw, out, smoothing_px=a.sigma, progress=False)
    print(json.dumps(dict(n_in=s.n_in, n_out=s.n_out, dropped=s.dropped, seconds=s.seconds, spectra_per_s=s.spectra_per_s,
                          peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                          h5_mb=round(out.stat().st_size / 1e6, 1))))
    sys.exit(0)

raw = a.raw
if raw is None:
    from spectral_nb.mock import write_mock
    raw = write_mock(Path(tempfile.mkdtemp()), a.n, a.seed, progress=False)
r = subprocess.run([sys.executable, __file__, '--child', '--raw', str(raw), '--sigma', str(a.sigma)], capture_output=True, text=True, check=True)
res = json.loads(r.stdout.strip().splitlines()[-1])
print(json.dumps(dict(bench='preprocess', n=a.n, sigma=a.sigma, **res)))
