"""Benchmark: accuracy on held-out sources and speed of compact-CNN trunks (`spectral_nb.cnn.TRUNKS`).

Usage: .venv/bin/python benchmarks/bench_trunks.py --ds reports/ds_quick [--trunks lean fast strided] [--seeds 42 1 2]
                                                   [--epochs 12] [--define '{"s16": {"space_to_depth": 16, ...}}'] [--json OUT]
--ds is a domain-shift run folder (`nbs/08a_domain_shift.ipynb`, e.g. the `make report` quick run's `RUN/domain_shift`, or
`papermill nbs/08a_domain_shift.ipynb OUT.ipynb -p n_train 3000 -p n_heldout 1500 -p out_dir DIR`): it trains each trunk on
DIR/mock_train/dataset.h5 (train_compact_cnn, augmented, `epochs`, each seed) and tests it on DIR/mock_heldout, whose stars
and galaxies come from libraries the training mock never used. --define adds trunks of the TRUNKS form for the comparison.
Prints one JSON line per (trunk, seed): in-mock test accuracy, held-out accuracy and recall per class, training seconds,
and the model's inference speed on the test split (`inference_speed`: a plain tf.function, batch 1,024).
"""
import argparse, json, tempfile, time
from pathlib import Path
from spectral_nb import cnn
from spectral_nb.domain_shift import shift_metrics
from spectral_nb.records import read_records

ap = argparse.ArgumentParser()
ap.add_argument('--ds', type=Path, required=True)
ap.add_argument('--trunks', nargs='+', default=['lean', 'fast'])
ap.add_argument('--seeds', nargs='+', type=int, default=[42, 1, 2])
ap.add_argument('--epochs', type=int, default=12)
ap.add_argument('--define', default='{}', help='JSON {name: {space_to_depth, widths, kernels, strides}} of extra trunks')
ap.add_argument('--json', type=Path, default=None)
a = ap.parse_args()
cnn.TRUNKS.update({k: {**v, **{f: tuple(v[f]) for f in ('widths', 'kernels', 'strides')}} for k, v in json.loads(a.define).items()})
cat, _ = read_records(a.ds / 'mock_heldout' / 'raw.parquet', columns=['specObjID', 'class', 'true_library'], pixels=False)
held = dict(h5=a.ds / 'mock_heldout' / 'dataset.h5', origin=cat.set_index('specObjID')['true_library'])
rows = []
for seed in a.seeds:
    for trunk in a.trunks:
        out = Path(tempfile.mkdtemp(prefix=f'trunk_{trunk}_{seed}_'))
        t = time.time()
        path, m = cnn.train_compact_cnn(a.ds / 'mock_train' / 'dataset.h5', out, a.epochs, seed, True, trunk=trunk, figures=False, stream=False)
        r = shift_metrics(path, held, ['stelib', 'bc03'])['heldout_sources']
        row = dict(trunk=trunk, definition=cnn.TRUNKS[trunk], seed=seed, n_params=m['n_params'], in_mock=round(m['accuracy'], 4),
                   heldout=round(r['accuracy'], 4), heldout_recall={k: round(v, 3) for k, v in r['recall'].items()},
                   predict_spectra_per_s=round(m['predict_spectra_per_s']), seconds=round(time.time() - t), bundle=str(path))
        print(json.dumps(row), flush=True); rows.append(row)
if a.json: a.json.write_text(json.dumps(rows, indent=1))
