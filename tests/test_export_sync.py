"nbs/ is the source of truth: exporting the notebooks must reproduce spectral_nb/ exactly."
import shutil, subprocess, sys, filecmp
from pathlib import Path


def test_package_matches_notebooks(root, tmp_path):
    for name in ('nbs', 'spectral_nb'):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    for name in ('settings.ini', 'setup.py', 'pyproject.toml'):
        shutil.copy(root / name, tmp_path / name)
    exporter = Path(sys.executable).with_name('nbdev_export')
    subprocess.run([str(exporter)], cwd=tmp_path, check=True, capture_output=True)
    diff = []
    def walk(d: filecmp.dircmp, rel=''):
        diff.extend(f'{rel}{f}' for f in d.diff_files + d.left_only + d.right_only if not f.endswith('__pycache__'))
        for k, sub in d.subdirs.items():
            if k != '__pycache__': walk(sub, f'{rel}{k}/')
    walk(filecmp.dircmp(root / 'spectral_nb', tmp_path / 'spectral_nb', ignore=['__pycache__']))
    assert not diff, f"spectral_nb/ differs from what nbdev_export makes of nbs/: {diff}. Run nbdev_export and commit."
