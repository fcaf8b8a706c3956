"""Benchmark: peak memory and speed of training in memory against streamed training (issue 13, item 2).

Usage: .venv/bin/python benchmarks/bench_streaming.py --n 200000 [--h5 PATH] [--keep] [--synthetic-from 0] [--epochs 1]

Trains the compact CNN (main classes, augmented, batch 64) for `--epochs` epochs, each way in a fresh child process:
  in_memory: load_task + fit_model (which augments through fit_epochs), what the library does today;
  streamed:  stream_task + fit_streaming (H5Batches, one block of 4,096 file rows in memory).
Each child reports its peak RSS (ru_maxrss), its RSS after importing TensorFlow/Keras and building the model, the time to
load (load_task / stream_task: reading, scaler, dataset hash) and to fit, spectra/s of the fit, and the validation accuracy.

The dataset: --h5 PATH reuses PATH if it exists (else builds it there and keeps it); without --h5 it is built in a
temporary folder under --workdir and deleted at the end unless --keep. It is a mock survey of --n targets
(write_mock, ~240 targets/s on one core, + preprocess; the raw records are deleted once preprocessed) or, with
--synthetic-from M, M mock targets tiled to --n records (new specObjIDs, fluxes perturbed by Gaussian noise at 30% of
each pixel's own noise) and preprocessed: same layout, faster, but not an independent survey (the output says which).
Prints one JSON line.
"""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument('--n', type=int, default=200000, help='mock targets (some are dropped by preprocessing)')
ap.add_argument('--seed', type=int, default=1)
ap.add_argument('--h5', type=Path, default=None, help='dataset.h5 to reuse (built there if missing)')
ap.add_argument('--workdir', type=Path, default=Path(tempfile.gettempdir()))
ap.add_argument('--keep', action='store_true', help='keep the dataset built in the temporary folder')
ap.add_argument('--synthetic-from', type=int, default=0, help='tile a mock of this many targets instead of simulating --n')
ap.add_argument('--epochs', type=int, default=1)
ap.add_argument('--batch-size', type=int, default=64)
ap.add_argument('--no-augment', action='store_true')
ap.add_argument('--build-only', action='store_true', help='build (or check) the dataset and stop')
ap.add_argument('--only', choices=('in_memory', 'streamed'), default=None, help='run one way only')
ap.add_argument('--child', choices=('in_memory', 'streamed'), default=None, help=argparse.SUPPRESS)
a = ap.parse_args()


def rss_mb(): return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

def current_rss_mb():
    with open('/proc/self/status') as f:
        return round(next(int(l.split()[1]) for l in f if l.startswith('VmRSS:')) / 1024, 1)


if a.child:
    t0 = time.perf_counter()
    import numpy as np
    from spectral_nb.config import CLASSES, NPIX
    from spectral_nb.inputs import InputSpec
    from spectral_nb.fit import seed_everything, load_task, fit_model, fit_streaming
    from spectral_nb.streaming import stream_task, predict_streaming
    from spectral_nb.cnn import build_compact_cnn
    seed_everything(a.seed)
    model = build_compact_cnn(len(CLASSES), NPIX)
    base = dict(rss_after_imports_mb=current_rss_mb(), peak_rss_after_imports_mb=rss_mb())
    t = time.perf_counter()
    if a.child == 'in_memory':
        data = load_task(a.h5, 'main', InputSpec(), seed=a.seed)
        n_train, n_val = data['train'].n, data['val'].n
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        hist = fit_model(model, data, 'cnn', a.epochs, batch_size=a.batch_size, augment=not a.no_augment, seed=a.seed, patience=a.epochs + 1)
        fit_s = time.perf_counter() - t
    else:
        data = stream_task(a.h5, 'main', 'cnn', batch_size=a.batch_size, seed=a.seed, augment=not a.no_augment)
        n_train, n_val = data['train'].n, data['val'].n
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        hist = fit_streaming(model, data, epochs=a.epochs, patience=a.epochs + 1)
        fit_s = time.perf_counter() - t
    print(json.dumps(dict(way=a.child, n_train=n_train, n_val=n_val, epochs=len(hist['loss']), peak_rss_mb=rss_mb(),
                          rss_at_end_mb=current_rss_mb(), **base, load_s=round(load_s, 1), fit_s=round(fit_s, 1),
                          fit_spectra_per_s=round(n_train * len(hist['loss']) / fit_s, 1), wall_s=round(time.perf_counter() - t0, 1),
                          val_accuracy=round(hist['val_accuracy'][-1], 4),
                          **({'block_reads': hist['block_reads']} if 'block_reads' in hist else {}))))
    sys.exit(0)


def tile_raw(src: Path, dst: Path, n: int, seed: int) -> Path:
    "Raw records of `src` repeated until `n`, each copy with new specObjIDs and its fluxes perturbed by noise at 30% of each pixel's own noise."
    import numpy as np
    from spectral_nb.records import iter_records, RecordWriter
    from spectral_nb.mock import truth_schema
    rng = np.random.default_rng(seed); w = None; done = 0; copy = 0
    while done < n:
        for cat, pix in iter_records(src, batch_size=2048):
            k = min(len(cat), n - done)
            if k <= 0: break
            cat, pix = cat.iloc[:k].copy(), {c: v[:k] for c, v in pix.items()}
            cat['specObjID'] = (np.uint64(10 ** 15) + np.arange(done, done + k, dtype=np.uint64)).astype(cat['specObjID'].dtype)
            if copy:
                ivar = np.asarray(pix['ivar'], np.float32)
                noise = np.where(ivar > 0, 1 / np.sqrt(np.where(ivar > 0, ivar, 1)), 0).astype(np.float32)
                pix = dict(pix, flux=(np.asarray(pix['flux'], np.float32) + 0.3 * noise * rng.standard_normal(noise.shape, dtype=np.float32)))
            if w is None: w = RecordWriter(dst, truth_schema(cat))
            w.write(cat, pix); done += k
        copy += 1
    w.close(ok=True)
    return dst


def build(h5: Path) -> dict:
    from spectral_nb.mock import write_mock
    from spectral_nb.preprocess import preprocess
    h5.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    raws = []
    if a.synthetic_from:
        base = write_mock(h5.parent / 'base', a.synthetic_from, a.seed, progress=False); raws.append(base)
        raw = tile_raw(base, h5.parent / 'raw_tiled.parquet', a.n, a.seed)
        how = f'synthetic: a {a.synthetic_from}-target mock (write_mock seed {a.seed}) tiled to {a.n} records, new specObjIDs, perturbed fluxes'
    else:
        raw = write_mock(h5.parent / 'mock', a.n, a.seed, progress=False)
        how = f'mock survey of {a.n} targets (write_mock seed {a.seed})'
    raws.append(raw); mock_s = time.perf_counter() - t
    t = time.perf_counter()
    s = preprocess(raw, h5, seed=a.seed, progress=False)
    for r in raws:
        if Path(r).exists(): Path(r).unlink()
    return dict(dataset=how, build_mock_s=round(mock_s, 1), build_preprocess_s=round(time.perf_counter() - t, 1), n_out=s.n_out)


tmp = None
if a.h5 is None:
    tmp = Path(tempfile.mkdtemp(prefix='bench_streaming_', dir=a.workdir)); h5 = tmp / 'dataset.h5'
else:
    h5 = a.h5
try:
    made = build(h5) if not h5.exists() else dict(dataset=f'reused {h5}')
    import pandas as pd
    n_rows = len(pd.read_hdf(h5, 'source_info', columns=['split']))
    if a.build_only:
        print(json.dumps(dict(bench='streaming', built=str(h5), n_rows=n_rows, h5_gb=round(h5.stat().st_size / 1e9, 2), **made))); sys.exit(0)
    res = {}
    for way in ('in_memory', 'streamed'):
        if a.only and way != a.only: continue
        cmd = [sys.executable, __file__, '--child', way, '--h5', str(h5), '--seed', str(a.seed), '--epochs', str(a.epochs),
               '--batch-size', str(a.batch_size)] + (['--no-augment'] if a.no_augment else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            res[way] = dict(failed=r.returncode, stderr_tail=r.stderr[-1500:])
        else:
            res[way] = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps(dict(bench='streaming', n_requested=a.n, n_rows=n_rows, h5_gb=round(h5.stat().st_size / 1e9, 2),
                          augment=not a.no_augment, batch_size=a.batch_size, block_rows=4096, **made, **res)))
finally:
    if tmp is not None and not a.keep: shutil.rmtree(tmp, ignore_errors=True)
