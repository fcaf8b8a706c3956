"""How much do the real-sky figures move with the seed and the mock's size? For each seed: a mock survey of `--n`
targets, preprocessing, the compact CNN and (unless `--no-mixed`) the main-class mixed-input network, each scored on the
real SDSS development set (each object once). Prints one JSON line per model and seed; `--json` also writes them.

    python benchmarks/bench_real_seeds.py --n 10000 --seeds 1 2 [--work DIR] [--json OUT.json]

About 70 s (compact) + 130 s (mixed) per seed at n = 10,000 on 2 cores. The real set is a yardstick: never train on it."""
import argparse, json, logging, tempfile, time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument('--n', type=int, default=10000)
ap.add_argument('--seeds', type=int, nargs='+', default=[1, 2])
ap.add_argument('--epochs', type=int, default=12)
ap.add_argument('--no-mixed', action='store_true')
ap.add_argument('--work', type=Path, default=None, help='folder for the mocks and models (default: a temporary one)')
ap.add_argument('--json', type=Path, default=None)
a = ap.parse_args()
logging.basicConfig(level=logging.WARNING)

from spectral_nb import mock, real_sdss
from spectral_nb.preprocess import preprocess
from spectral_nb.cnn import train_compact_cnn
from spectral_nb.mixed import train_mixed

work = a.work or Path(tempfile.mkdtemp(prefix='real_seeds_'))
cat, pix = real_sdss.load_real_dev()
raw_real = real_sdss.write_real_dev(work / 'real_raw.parquet', cat, pix)
rows = []
for seed in a.seeds:
    w = work / f'n{a.n}_seed{seed}'
    t0 = time.time()
    h5 = w / 'dataset.h5'
    preprocess(mock.write_mock(w / 'mock', a.n, seed=seed, progress=False), h5, seed=seed, progress=False)
    models = {'cnn_compact': lambda: train_compact_cnn(h5, w / 'cnn', epochs=a.epochs, seed=seed, figures=False)}
    if not a.no_mixed:
        models['mixed_main'] = lambda: train_mixed(h5, w / 'mixed', 'main', epochs=a.epochs, seed=seed, figures=False)
    for name, train in models.items():
        path, m = train()
        rm, obj, _ = real_sdss.score_model(path, raw_real, cat)
        missed = obj[~obj['correct'].astype(bool)]
        row = dict(model=name, n=a.n, seed=seed, mock_test_accuracy=round(m['accuracy'], 4),
                   real_balanced_accuracy=round(rm['balanced_accuracy'], 4),
                   real_recall={k: round(v, 4) for k, v in rm['recall'].items()},
                   missed=[f"{r.label}->{r.predicted} {r.plate}-{r.fiberID}" for r in missed.itertuples()],
                   seconds=round(time.time() - t0, 1))
        print(json.dumps(row), flush=True)
        rows.append(row)
if a.json:
    a.json.write_text(json.dumps(rows, indent=1))
