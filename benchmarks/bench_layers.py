"""Profile: where a saved flux-only CNN spends its inference time, layer block by layer block, and what XLA gives.

Usage: .venv/bin/python benchmarks/bench_layers.py --run reports/quick [--model cnn_compact] [--batch 1024]
Times the model cut after each activation / concatenation / dense layer (cumulative, 5 calls after a warm-up, random
inputs of one batch), then the whole model as a tf.function with and without jit_compile (XLA), and the largest
difference between their outputs. Prints JSON lines. Cumulative times are noisy on a busy machine: compare large steps.
"""
import argparse, json, os, time
from pathlib import Path
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import numpy as np
import keras, tensorflow as tf

ap = argparse.ArgumentParser()
ap.add_argument('--run', type=Path, required=True)
ap.add_argument('--model', default='cnn_compact')
ap.add_argument('--batch', type=int, default=1024)
a = ap.parse_args()
path = next(iter(sorted(a.run.glob(f'*/models/{a.model}'))), None)
if path is None: raise SystemExit(f"No model {a.model} under {a.run}/*/models/")
m = keras.models.load_model(path / 'model.keras')
if len(m.inputs) != 1: raise SystemExit(f"{a.model} has {len(m.inputs)} inputs; this profile is for flux-only CNNs")
x = tf.constant(np.random.default_rng(0).normal(size=(a.batch,) + tuple(m.inputs[0].shape[1:])).astype(np.float32))

def timed(f, reps=5):
    f(x); t = time.perf_counter()
    for _ in range(reps): f(x)
    return (time.perf_counter() - t) / reps

prev = 0.0
for layer in m.layers:
    if layer.__class__.__name__ not in ('Activation', 'Concatenate', 'Dense', 'Flatten', 'GlobalAveragePooling1D', 'MaxPooling1D'): continue
    sub = keras.Model(m.inputs, layer.output)
    dt = timed(tf.function(lambda t, sub=sub: sub(t, training=False)))
    print(json.dumps(dict(layer=layer.name, shape=str(layer.output.shape), cumulative_ms=round(1e3 * dt, 1), step_ms=round(1e3 * (dt - prev), 1))))
    prev = dt
plain, xla = (tf.function(lambda t: m(t, training=False), jit_compile=j) for j in (False, True))
res = {name: a.batch / timed(f) for name, f in (('plain', plain), ('xla', xla))}
diff = float(np.abs(plain(x).numpy() - xla(x).numpy()).max())
print(json.dumps(dict(model=a.model, batch=a.batch, spectra_per_s_plain=round(res['plain']), spectra_per_s_xla=round(res['xla']),
                      max_abs_output_difference=diff)))
