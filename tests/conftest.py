import os, shutil
os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='session')
def root():
    return ROOT


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
