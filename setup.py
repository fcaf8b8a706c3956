"""Packaging for spectral_nb, driven by settings.ini (nbdev 2 layout)."""
from configparser import ConfigParser
import setuptools, shlex

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
console_scripts = cfg.get('console_scripts', '').split()

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    license='Apache Software License 2.0',
    author=cfg['author'],
    author_email=cfg['author_email'],
    keywords=cfg['keywords'].split(),
    packages=setuptools.find_namespace_packages(include=['spectral_nb', 'spectral_nb.*'], exclude=['*.__pycache__']),  # data folders too (no setuptools warning)
    include_package_data=True,
    package_data={'spectral_nb': ['data/*.txt', 'data/real_sdss_dev/*', 'models/default/*', 'models/default/*/*']},  # the quasar composite; the real-SDSS yardstick; the pretrained model
    install_requires=requirements,
    extras_require={'dev': dev_requirements},
    python_requires='>=' + cfg['min_python'],
    entry_points={'console_scripts': console_scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
