"Star subclass -> star group: every form SDSS uses (the 41 SDSS-I/II subclasses, BOSS/eBOSS archetype names, MK types) gets one of the 15 groups."
from importlib import resources

import pandas as pd
import pytest

from spectral_nb.config import STAR_GROUPS, STAR_SUBCLASSES, STAR_SUBCLASS_GROUP, star_group
from spectral_nb.preprocess import make_labels

# What star_group gave before BOSS archetype names were handled (spectral_nb at 037b25f): these must not change.
OLD_FORMS = {
    'A0': 'A', 'A0p': 'A', 'B6': 'B', 'B9': 'B', 'CV': 'CV', 'Carbon': 'Carbon', 'CarbonWD': 'CarbonWD',
    'Carbon_lines': 'Carbon_lines', 'F2': 'F', 'F5': 'F', 'F9': 'F', 'G0': 'G', 'G2': 'G', 'K1': 'K', 'K3': 'K', 'K5': 'K',
    'K7': 'K', 'L0': 'L', 'L1': 'L', 'L2': 'L', 'L3': 'L', 'L4': 'L', 'L5.5': 'L', 'L9': 'L', 'M0': 'M', 'M0V': 'M', 'M1': 'M',
    'M2': 'M', 'M2V': 'M', 'M3': 'M', 'M4': 'M', 'M5': 'M', 'M6': 'M', 'M7': 'M', 'M8': 'M', 'M9': 'M', 'O': 'O', 'OB': 'O',
    'T2': 'T2', 'WD': 'WD', 'WDmagnetic': 'WDmagnetic',
    # other forms of SDSS-I/II spectra and MK types the old rule already knew
    'G5': 'G', 'M0.5': 'M', 'K0III': 'K', 'F5V (HD 1)': 'F', 'K7 (HD 123)': 'K', 'B3': 'B', 'A1III': 'A', 'sdF3': 'F',
    'esdM1': 'M', 'usdK7': 'K', 'sdM2': 'M', 'WDcooler': 'WD', 'WDhotter': 'WD', 'CalciumWD': 'WD', 'DA': 'WD', 'DAH': 'WD',
    'L5': 'L', 'T5': 'T2', 'T4.5': 'T2', 'Carbon_XX': 'Carbon', 'M2V+WD': 'WD', 'Ap': 'A', 'Be': 'B', 'MS': 'M', 'sdB': 'B',
    'sdO': 'O', 'F3/F5V': 'F', 'K0-1III': 'K', 'G8III-IV': 'G', 'O9.5Iab': 'O', 'B1Ia+': 'B', 'G5III+...': 'G',
    'B2IV-V': 'B', 'K3IIIb': 'K', 'M4.5III': 'M', 'F9IV (12345)': 'F', 'A0IVn': 'A', 'B8IIIp': 'B', 'M3III/': 'M',
    'K2IIICN1': 'K',
}

# BOSS/eBOSS stellar archetype names (MK type, luminosity class, peculiarity, '+...' companion, the library star's id)
# and other forms of SDSS star subclasses the old rule dropped or never saw.
ARCHETYPES = {
    'F0IV (81937)': 'F', 'B5 (338529)': 'B', 'sd:F0 (G_84-29)': 'F', 'B9.5V+... (37269)': 'B', 'A2II (39866)': 'A',
    'K3V (32147)': 'K', 'G9IV (100030)': 'G', 'F8V (G_243-63)': 'F', 'F2V (33256)': 'F', 'K1III (18322)': 'K',
    'K0V (10780)': 'K', 'B3V (29763)': 'B', 'G8V (75732)': 'G', 'B9III (15318)': 'B', 'WDcooler': 'WD', 'CV': 'CV',
    'WDmagnetic': 'WDmagnetic', 'A0': 'A', 'sd:K2 (G_16-20)': 'K', 'esd:M3': 'M', 'M2.5V+... (1234)': 'M',
    'F7Ib-IIv': 'F', 'cF0': 'F', 'gK0': 'K', 'dM2e': 'M', 'sgG5 (HD 2)': 'G', 'A1m': 'A', 'Am': 'A', 'kA2hA5mA7V': 'A',
    'K0IIIbCN1': 'K', 'G8III Fe-1': 'G', 'O8e (HD 3)': 'O', 'sdOB': 'O', 'DB': 'WD', 'DC': 'WD', 'DQ': 'WD', 'DZ': 'WD',
    'C': 'Carbon', 'C5': 'Carbon', 'C-N5': 'Carbon', 'C-R': 'Carbon', 'CH': 'Carbon', 'dC': 'Carbon', 'R': 'Carbon',
    'N': 'Carbon', 'S4/2': 'M', 'WN': 'O', 'WC': 'O', 'L3.5': 'L', 'T': 'T2', 'Y0': 'T2', 'K4.5 (HD 5)': 'K',
}


def test_the_41_sdss_subclasses_keep_their_groups():
    assert {s: STAR_SUBCLASS_GROUP[s] for s in STAR_SUBCLASSES} == {s: OLD_FORMS[s] for s in STAR_SUBCLASSES}
    assert sorted(set(STAR_SUBCLASS_GROUP.values())) == sorted(STAR_GROUPS)


@pytest.mark.parametrize('form', sorted(OLD_FORMS))
def test_old_forms_map_as_before(form):
    assert star_group(form) == OLD_FORMS[form]


@pytest.mark.parametrize('form', sorted(ARCHETYPES))
def test_archetype_and_mk_forms_map_to_their_group(form):
    assert star_group(form) == ARCHETYPES[form] and ARCHETYPES[form] in STAR_GROUPS


def test_every_star_of_the_real_dev_set_gets_a_group():
    "Every STAR row of the vendored real-SDSS set (BOSS archetype names among them) maps to a group, and make_labels keeps each row."
    csv = resources.files('spectral_nb') / 'data' / 'real_sdss_dev' / 'real_sdss_dev.csv'
    d = pd.read_csv(csv, dtype={'subclass': str}, keep_default_na=False)
    stars = d[d['class'] == 'STAR']
    assert len(stars) == 19 and any('(' in s for s in stars['subclass'])
    groups = [star_group(s) for s in stars['subclass']]  # raises for a form no group fits
    assert set(groups) <= set(STAR_GROUPS)
    main, gal, star, why = make_labels(stars['class'], stars['subclass'])
    assert list(star) == groups and (why == '').all() and (main == 'STAR').all()


def test_what_no_group_fits_is_left_out_of_the_star_task_only():
    for s in ('', 'NULL', 'STAR', 'Z9', 'QSO'):
        assert star_group(s, default='') == ''
    with pytest.raises(ValueError, match='Unknown star subclass'):
        star_group('Z9')
    main, gal, star, why = make_labels(['STAR', 'STAR'], ['', 'Z9 (1)'])
    assert list(star) == ['', ''] and list(why) == ['', '']
