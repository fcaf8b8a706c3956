"""Benchmark: training and inference speed of spectral_nb's networks at the thesis's full size, on whatever Keras backend runs.

Usage: KERAS_BACKEND=jax python benchmarks/bench_gpu.py [--n 96115] [--epochs 3] [--batch 32] [--json OUT.json]
Builds each network with the library's own builders (compact CNN with its trunks `lean` (the default), `fast` and `strided`, mixed-input, redshift, autoencoder and a
thesis-sized CNN) and fits it on seeded random inputs of the full profile's shape (60% of --n spectra for training,
3,736 pixels): timing does not depend on what the pixels hold, so no mock survey is needed. The first epoch (compilation)
is reported apart; the rest give seconds per epoch. Then model.predict at batch 4,096. Meant for a GPU machine whose
image has no TensorFlow (Keras 3 runs on JAX there); accuracy is not measured here. Writes JSON lines, and --json a file
after every model (a run cut short keeps what it measured).
"""
import argparse, json, os, platform, sys, time, traceback
from pathlib import Path
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument('--n', type=int, default=96115, help='spectra in the dataset (the thesis kept 96,115)')
ap.add_argument('--epochs', type=int, default=3)
ap.add_argument('--batch', type=int, default=32, help="training batch size (the full profile's is 32)")
ap.add_argument('--models', nargs='+', default=['cnn_compact_lean', 'cnn_compact_fast', 'cnn_compact_strided', 'mixed', 'redshift', 'autoencoder', 'thesis_cnn'])
ap.add_argument('--json', type=Path, default=None)
a = ap.parse_args()
import keras
from spectral_nb.config import NPIX, CLASSES
from spectral_nb.preprocess import FEATURE_COLUMNS

def thesis_cnn():
    "A large configuration of the thesis's search space (the tuned CNN of the full profile is of this kind)."
    import keras_tuner as kt
    from spectral_nb.cnn import build_thesis_cnn, THESIS_SPACE
    hp = kt.HyperParameters()
    return build_thesis_cnn(hp, len(CLASSES), NPIX, THESIS_SPACE)   # every hyperparameter at its default

def builders():
    from spectral_nb.cnn import build_compact_cnn
    from spectral_nb.mixed import build_mixed
    from spectral_nb.redshift import build_redshift_cnn
    from spectral_nb.autoencoder import build_autoencoder, AE_PIXELS
    return {'cnn_compact_lean': (lambda: build_compact_cnn(len(CLASSES), trunk='lean'), 'cnn'),
            'cnn_compact_fast': (lambda: build_compact_cnn(len(CLASSES), trunk='fast'), 'cnn'),
            'cnn_compact_strided': (lambda: build_compact_cnn(len(CLASSES), trunk='strided'), 'cnn'),
            'mixed': (lambda: build_mixed(len(CLASSES)), 'mixed'),
            'redshift': (build_redshift_cnn, 'redshift'),
            'autoencoder': (lambda: build_autoencoder()[0], 'autoencoder'),
            'thesis_cnn': (thesis_cnn, 'cnn')}

class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): self.times.append(time.perf_counter() - self.t)

rng = np.random.default_rng(0)
n_train = int(0.6 * a.n)
flux = rng.normal(size=(n_train, NPIX, 1)).astype(np.float32)
feat = rng.normal(size=(n_train, len(FEATURE_COLUMNS))).astype(np.float32)
y = rng.integers(0, len(CLASSES), n_train)
info = dict(backend=keras.backend.backend(), keras=keras.__version__, python=platform.python_version(), n_train=n_train,
            batch=a.batch, epochs=a.epochs)
try:
    import jax; info['devices'] = [str(d) for d in jax.devices()]
except Exception: pass
print(json.dumps(info), flush=True)
results = []
for name in a.models:
    try:
        build, kind = builders()[name]
        keras.utils.set_random_seed(0)
        model = build()
        if kind == 'mixed': x = {'flux': flux, 'features': feat}; target = y
        elif kind == 'autoencoder':
            npx = model.inputs[0].shape[1]; x = flux[:, :npx]; target = x
        elif kind == 'redshift': x = flux; target = rng.integers(0, model.outputs[0].shape[-1], n_train)
        else: x, target = flux, y
        timer = EpochTimer(); timer.times = []
        model.fit(x, target, batch_size=a.batch, epochs=a.epochs, verbose=0, callbacks=[timer])
        px = {k: v[:16384] for k, v in x.items()} if isinstance(x, dict) else x[:16384]
        model.predict(px, batch_size=4096, verbose=0)
        t = time.perf_counter(); model.predict(px, batch_size=4096, verbose=0); pt = time.perf_counter() - t
        n_pred = len(next(iter(px.values()))) if isinstance(px, dict) else len(px)
        rest = timer.times[1:] or timer.times
        r = dict(model=name, n_params=model.count_params(), first_epoch_s=round(timer.times[0], 2), s_per_epoch=round(float(np.median(rest)), 2),
                 train_spectra_per_s=round(n_train / float(np.median(rest))), predict_spectra_per_s_b4096=round(n_pred / pt), n_predicted=n_pred)
    except Exception as e:
        r = dict(model=name, error=f'{type(e).__name__}: {e}'[:800], trace=traceback.format_exc()[-1500:])
    print(json.dumps(r), flush=True); results.append(r)
    if a.json: a.json.write_text(json.dumps(dict(info=info, results=results), indent=1))
