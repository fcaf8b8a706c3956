import fcntl, os, shutil
os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='session')
def root():
    return ROOT


def _shared_folder(tmp_path_factory, name: str) -> Path:
    "A folder of this test run that every xdist worker of the run sees (one run's workers share the folder above their own temporary roots)."
    uid = os.environ.get('PYTEST_XDIST_TESTRUNUID')
    if uid is None: return tmp_path_factory.mktemp(name)   # one process: its own numbered folder
    d = tmp_path_factory.getbasetemp().parent / f'{name}-{uid}'
    d.mkdir(exist_ok=True)
    return d


def _made_once(path: Path, make) -> Path:
    "`make()` writes `path` unless a finished one is there; one process at a time (a lock file beside it), so xdist workers wait and share it."
    done = path.with_name(path.name + '.done')
    with open(path.with_name(path.name + '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                   # released when the file closes, also when make() raises
        if not done.exists():
            make()                                         # write_mock and preprocess write atomically: a failure leaves no half file
            done.touch()
    return path


@pytest.fixture(scope='session')
def mock_dataset(tmp_path_factory):
    """Factory: `mock_dataset(n, seed, smoothing_px=0.0, split_seed=None)` -> `(raw, h5)`: the raw.parquet of a mock survey of `n`
    targets drawn with `seed`, and its dataset.h5 preprocessed with Gaussian smoothing `smoothing_px` and split seed `split_seed` (None:
    preprocess's default). Each survey and each dataset is made once per test run, shared by every test file and xdist worker
    that asks for the same arguments: read them, copy them to change them, write outputs elsewhere."""
    from spectral_nb.mock import write_mock
    from spectral_nb.preprocess import preprocess
    root = _shared_folder(tmp_path_factory, 'mock_datasets')
    made = {}

    def make(n: int, seed: int, smoothing_px: float = 0.0, split_seed: int | None = None):
        key = (int(n), int(seed), float(smoothing_px), split_seed)
        if key not in made:
            folder = root / f'n{n}-seed{seed}'
            folder.mkdir(exist_ok=True)
            raw = _made_once(folder / 'raw.parquet', lambda: write_mock(folder, n, seed=seed, progress=False))
            h5 = folder / f'smooth{float(smoothing_px):g}-split{split_seed}' / 'dataset.h5'   # one folder each: its <stem>.scaler.json beside it
            h5.parent.mkdir(exist_ok=True)
            kw = {} if split_seed is None else dict(seed=split_seed)
            made[key] = raw, _made_once(h5, lambda: preprocess(raw, h5, smoothing_px=smoothing_px, progress=False, **kw))
        return made[key]
    return make


@pytest.fixture(scope='session')
def demo_run(tmp_path_factory):
    "A small explorer run folder (tests/demo_run.py): a 240-target mock survey, compact CNN, autoencoder and redshift network, one epoch each."
    from demo_run import make_demo_run   # tests/ is on sys.path: pytest puts a conftest's folder there (no __init__.py, default import mode)
    return make_demo_run(tmp_path_factory.mktemp('explore') / 'run', n=240, epochs=1)


def pytest_collection_modifyitems(config, items):
    "The end-to-end smoke chain (the longest test file) first: with two xdist workers (`make test`) it then runs beside all the rest."
    items.sort(key=lambda it: 0 if it.nodeid.split('::')[0].endswith('test_reproduce.py') else 1)   # stable: the rest keep their order


CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
REQUIRE_BROWSER = os.environ.get('SPECTRAL_NB_REQUIRE_BROWSER') == '1'   # .ci/run sets it: there the browser tests must not skip


@pytest.fixture
def chromium():
    "Debian's headless chromium driven by Playwright (its own browser download is never used); skips without one, fails in CI."
    if CHROMIUM is None:
        if REQUIRE_BROWSER: pytest.fail("chromium is not installed but SPECTRAL_NB_REQUIRE_BROWSER=1: .ci/run installs it with apt-get")
        pytest.skip("no chromium on this machine (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                                                               '--disable-background-networking', '--disable-component-update', '--disable-sync'])
        try: yield b
        finally: b.close()
