"benchmarks/bench_predict.py on a file longer than --max-model-rows and not a multiple of the batch (it once sliced past the end)."
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_predict_runs_on_a_file_of_odd_length(demo_run, tmp_path):
    from spectral_nb.dataset import Dataset

    n = len(Dataset(demo_run / 'data' / 'dataset.h5'))
    assert n > 100 and n % 64, n  # longer than the rows kept in memory, and a last chunk shorter than the batch
    out = tmp_path / 'bench.json'
    r = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'bench_predict.py'), '--run', str(demo_run), '--models', 'cnn_compact',
         '--batches', '64', '--max-model-rows', '100', '--repeat', '1', '--json', str(out)],
        capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())['results']
    stages = {x.get('stage') or x.get('measure') for x in rows}
    assert {'prepare_flux', 'prepare_flux_stored_scale', 'model_only', 'end_to_end'} <= stages, stages
    assert all(x['spectra'] == n for x in rows if x.get('stage', '').startswith('prepare_flux'))
