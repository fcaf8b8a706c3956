import os
os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='session')
def root():
    return ROOT
