import os
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
