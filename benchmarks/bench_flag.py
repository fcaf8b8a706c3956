"""Benchmark: does the quality flag catch what no class fits? A compact CNN is trained on two classes of a mock survey
(by default GALAXY and STAR: it never sees a quasar), calibrated and saved as `report_classifier` does; then

- `left_out`: its flag on every spectrum of the left-out class (each one an error: the model has no answer for it),
  split into the low-confidence and the novelty term, and how well each score alone ranks left-out above seen spectra
  (AUROC: the novelty score, the calibrated top probability, and the old Mahalanobis novelty for comparison);
- `seen`: its flag on the test split of the classes it knows (the budget: about 5%);
- `noise`: its flag on spectra of no object (`real_sdss.noise_records`); `noise_pretrained`: the same for the package's
  pretrained model.

Usage: .venv/bin/python benchmarks/bench_flag.py [--h5 DATASET.h5 | --n 4000] [--leave-out QSO] [--epochs 8] [--seed 1]
                                                 [--out /tmp/bench_flag] [--json OUT.json]
Without --h5 it makes a mock survey of --n targets first (`spectral-nb mock` + `preprocess`, about a minute per 4,000).
"""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np
from scipy.stats import mannwhitneyu
from spectral_nb.config import CLASSES
from spectral_nb.fit import fit_model, load_task, seed_everything
from spectral_nb.inputs import TaskData, InputSpec
from spectral_nb.cnn import build_compact_cnn
from spectral_nb.evaluate import report_classifier
from spectral_nb.bundle import save_bundle, load_bundle, embedding_model, novelty_score
from spectral_nb.predict import predict
from spectral_nb.classify import default_model
from spectral_nb.catalog import ZW
from spectral_nb.real_sdss import noise_records, noise_flags

ap = argparse.ArgumentParser()
ap.add_argument('--h5', type=Path, default=None)
ap.add_argument('--n', type=int, default=4000)
ap.add_argument('--leave-out', default='QSO', choices=CLASSES)
ap.add_argument('--epochs', type=int, default=8)
ap.add_argument('--seed', type=int, default=1)
ap.add_argument('--out', type=Path, default=Path('/tmp/bench_flag'))
ap.add_argument('--json', type=Path, default=None)
a = ap.parse_args()
a.out.mkdir(parents=True, exist_ok=True)
t0 = time.perf_counter()
if a.h5 is None:
    cli = Path(sys.executable).parent / 'spectral-nb'
    subprocess.run([cli, 'mock', '--n', str(a.n), '--seed', str(a.seed), '--out', a.out / 'mock', '--quiet'], check=True)
    a.h5 = a.out / 'mock' / 'dataset.h5'
    subprocess.run([cli, 'preprocess', '--raw', a.out / 'mock' / 'raw.parquet', '--out', a.h5, '--quiet'], check=True)
keep = tuple(c for c in CLASSES if c != a.leave_out)


def known(td: TaskData) -> TaskData:
    "A split restricted to the kept classes, labels re-indexed."
    idx = [td.classes.index(c) for c in keep]
    m = np.isin(td.y, idx)
    raw = None if td.raw is None else td.raw[m]
    return TaskData(td.flux[m], td.feat[m], np.searchsorted(idx, td.y[m]), td.info[m].reset_index(drop=True), keep,
                    raw, td.spec, td.scaler)


seed_everything(a.seed)
data = load_task(a.h5, 'main', seed=a.seed, spec=InputSpec())
data2 = dict(data, **{s: known(data[s]) for s in ('train', 'val', 'test')})
model = build_compact_cnn(len(keep))
hist = fit_model(model, data2, 'cnn', a.epochs, batch_size=64, seed=a.seed)
m = report_classifier('cnn_two', model, data2, 'cnn', hist, a.out / 'run', a.h5, figures=False)
path = save_bundle(a.out / 'run' / 'models' / 'cnn_two', model, 'cnn', 'main', keep, data['scaler'], data['spec'],
                   dataset=data['dataset'])
df = predict(path, a.h5, progress=False)
zw = df['ZWARNING'].to_numpy(np.int64)
out_cls = (df['label_main'] == a.leave_out).to_numpy()
seen = ((df['split'] == 'test') & ~out_cls).to_numpy()
top = df[[f'prob_{c}' for c in keep]].to_numpy(float).max(1)


def auroc(score):
    "The chance that a left-out spectrum scores above a seen test spectrum."
    return float(mannwhitneyu(score[out_cls], score[seen]).statistic / (out_cls.sum() * seen.sum()))


def bit(name, rows):
    return float(((zw[rows] & ZW[name]) > 0).mean())


# the Mahalanobis novelty this replaced (class means, one shared covariance), fitted on the same training features, against
# the kNN novelty the bundle holds: AUROC of each on the test split (left-out class against seen classes)
emb_model = embedding_model(load_bundle(path)[0])
feats = lambda td: emb_model.predict(td.inputs('cnn'), verbose=0, batch_size=512)[1]
e_tr, y = feats(data2['train']), data2['train'].y
means = np.stack([e_tr[y == c].mean(0) for c in range(len(keep))])
r = e_tr - means[y]
cov = r.T @ r / (len(y) - len(keep))
cov = 0.9 * cov + 0.1 * np.diag(np.diag(cov))
cov += 1e-2 * np.trace(cov) / len(cov) * np.eye(len(cov))
te = data['test']
e_te, out_te = feats(te), te.y == te.classes.index(a.leave_out)
meta = json.loads((path / 'meta.json').read_text())
test_auroc = {}
for name, sc in (('knn_cosine', novelty_score(e_te, meta['novelty'])),
                 ('mahalanobis', novelty_score(e_te, dict(means=means.tolist(), precision=np.linalg.inv(cov).tolist())))):
    test_auroc[name] = float(mannwhitneyu(sc[out_te], sc[~out_te]).statistic / (out_te.sum() * (~out_te).sum()))
res = dict(
    dataset=str(a.h5), leave_out=a.leave_out, kept=keep, epochs=a.epochs, seed=a.seed,
    seen=dict(n=int(seen.sum()), fraction_flagged=float(df['flag'].to_numpy()[seen].mean()),
              accuracy=float((df['predicted'].to_numpy()[seen] == df['label_main'].to_numpy()[seen]).mean())),
    left_out=dict(n=int(out_cls.sum()), fraction_flagged=float(df['flag'].to_numpy()[out_cls].mean()),
                  by_low_confidence=bit('LOW_CONFIDENCE', out_cls), by_novelty=bit('NOVELTY', out_cls),
                  by_novelty_only=float((((zw & ZW['NOVELTY']) > 0) & ((zw & ZW['LOW_CONFIDENCE']) == 0))[out_cls].mean()),
                  median_top_probability=float(np.median(top[out_cls])),
                  auroc_novelty=auroc(df['novelty'].to_numpy(float)), auroc_low_confidence=auroc(1 - top),
                  auroc_test_split_by_novelty_model=test_auroc),
    flag=dict(threshold=m['flag']['threshold'], novelty_threshold=m['flag']['novelty_threshold'], rule=m['flag']['rule']),
    noise=noise_flags(path, noise_records(a.out / 'noise.parquet', seed=a.seed)),
    noise_pretrained=noise_flags(default_model('classifier'), a.out / 'noise.parquet'),
    machine=dict(cpus=os.cpu_count(), python=platform.python_version()),
    seconds=time.perf_counter() - t0,
)
print(json.dumps(res, indent=1))
if a.json:
    a.json.write_text(json.dumps(res, indent=1))
