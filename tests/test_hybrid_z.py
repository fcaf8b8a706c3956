"The hybrid redshift (08e_hybrid_z): candidates from the network's posterior refined by eigen-templates over narrow windows."
import numpy as np, pytest
from spectral_nb.config import NPIX, C_KMS, DLOGLAM
from spectral_nb.mock import ZWARNING_SMALL_DELTA_CHI2, ZWARNING_Z_FITLIMIT
from spectral_nb.template_fit import (TemplateSet, FIT_REST_NPIX, S_MAX, shift_range, shift_of_z, design, chi2_scan,
                                      TEMPLATES_NPZ)
from spectral_nb.hybrid_z import (DCHI2_WARN, posterior_peaks, window_designs, scan_windows, bin_pixels, hybrid_templates,
                                  hybrid_redshift, zerr_floor, candidate_coverage, save_hybrid, load_hybrid)

LZ_EDGES = np.linspace(-0.01, 0.81, 329)  # bins of log10(1 + z) 0.0025 wide, as the redshift network's
CEN = 0.5 * (LZ_EDGES[1:] + LZ_EDGES[:-1])


def toy_set(name: str, k: int, lines, width: float, rng) -> TemplateSet:
    "A template set of a smooth continuum and k - 1 rows of three emission lines each, on the rest grid."
    x = np.arange(FIT_REST_NPIX)
    b = [1 + 0.3 * np.sin(x / 900 + rng.uniform(0, 6))]
    for _ in range(k - 1):
        b.append(sum(rng.uniform(0.5, 3) * np.exp(-0.5 * ((x - rng.choice(lines)) / width) ** 2) for _ in range(3)))
    cls = name.split(':')[0]
    return TemplateSet(name, cls, np.array(b), shift_range(cls))


@pytest.fixture(scope='module')
def sets():
    rng = np.random.default_rng(0)
    return [toy_set('GALAXY', 8, rng.integers(4000, 11000, 12), 2.0, rng),
            toy_set('QSO', 8, rng.integers(1000, 11000, 12), 15.0, rng),
            toy_set('STAR:K', 5, rng.integers(S_MAX - 10, S_MAX + NPIX, 40), 1.5, rng)]


@pytest.fixture(scope='module')
def ht(sets):
    return hybrid_templates(sets)


def observe(t: TemplateSet, z: float) -> np.ndarray:
    "The set's first template plus half of each other one, at redshift z (linear interpolation in log-lambda), noiseless."
    comb = t.basis.T @ np.r_[1.0, 0.5 * np.ones(len(t.basis) - 1)]
    return np.interp(np.arange(NPIX) + S_MAX - shift_of_z(z), np.arange(FIT_REST_NPIX), comb)


def posterior(zs, off: float = 0.0, width: float = 0.004) -> np.ndarray:
    "One Gaussian peak per spectrum over the bins, `off` (in log10(1 + z)) beside each redshift."
    p = np.exp(-0.5 * ((CEN[None] - np.log10(1 + np.asarray(zs, float))[:, None] - off) / width) ** 2)
    return p / p.sum(1, keepdims=True)


def test_refinement_recovers_shifted_noiseless_templates_to_1e4(sets, ht):
    zt = np.array([0.0731, 0.4517, 0.9, 1.37, 2.3, 3.81, 120 / C_KMS, -250 / C_KMS])
    which = [0, 0, 0, 1, 1, 1, 2, 2]
    flux = np.stack([observe(sets[w], z) for w, z in zip(which, zt)]) * 10
    for off in (-0.004, 0.0035):  # the network off by 1.5 bins either way
        h = hybrid_redshift(flux, posterior(zt, off), LZ_EDGES, ht)
        assert list(h.z_class) == ['GALAXY'] * 3 + ['QSO'] * 3 + ['STAR'] * 2
        assert (np.abs(h.z_pred - zt) / (1 + zt) < 1e-4).all(), (h.z_pred - zt).tolist()
        np.testing.assert_allclose(h.rv_kms[6:], [120, -250], atol=5)
        assert np.isnan(h.rv_kms[:6]).all() and (h.zwarning == 0).all()


def periodic_quasars(sets):
    "(templates, spectrum, z1, z2): quasar templates periodic in 600 rest pixels, which fit a spectrum at z1 as well as 600 pixels further, at z2."
    per = 600
    x = np.arange(FIT_REST_NPIX)
    rng = np.random.default_rng(4)
    pq = TemplateSet('QSO', 'QSO', np.array([np.sin(2 * np.pi * m * x / per + rng.uniform(0, 6)) for m in range(1, 9)]),
                     shift_range('QSO'))
    z1 = 1.5
    return hybrid_templates([sets[0], pq, sets[2]]), observe(pq, z1) + 3 + 0.05 * rng.standard_normal(NPIX), z1, (1 + z1) * 10 ** (per * DLOGLAM) - 1


def test_two_peak_posterior_keeps_both_candidates_and_small_delta_chi2_sets_the_bit(sets):
    htp, f, z1, z2 = periodic_quasars(sets)
    p = 0.55 * posterior([z1]) + 0.45 * posterior([z2])
    lz, mass, ok = posterior_peaks(p, LZ_EDGES, 3)
    assert ok[0, :2].all() and mass[0, 0] > mass[0, 1] > 0.2
    np.testing.assert_allclose(10 ** lz[0, :2] - 1, [z1, z2], rtol=5e-3)  # within a bin (0.58% in 1 + z)
    h = hybrid_redshift(f[None], p, LZ_EDGES, htp)
    np.testing.assert_allclose(sorted([h.z_cand_0[0], h.z_cand_1[0]]), [z1, z2], rtol=1e-4)
    assert h.delta_chi2[0] < DCHI2_WARN and h.zwarning[0] & ZWARNING_SMALL_DELTA_CHI2
    # one peak only: no competing candidate, no flag
    h1 = hybrid_redshift(f[None], posterior([z1]), LZ_EDGES, htp)
    assert h1.delta_chi2[0] == np.inf and h1.zwarning[0] == 0


def test_z_err_shrinks_with_signal_to_noise(sets, ht):
    rng = np.random.default_rng(3)
    base = observe(sets[0], 0.3) * 10
    errs = [np.median(hybrid_redshift(base[None] + s * rng.standard_normal((20, NPIX)), posterior([0.3] * 20), LZ_EDGES,
                                      ht).z_err_fit) for s in (0.4, 0.1, 0.025)]
    assert errs[0] > 2.5 * errs[1] > 6 * errs[2]  # ~1 / (S/N): x4 in S/N, /4 in Z_ERR
    np.testing.assert_allclose(errs[0] / errs[2], 16, rtol=0.35)


def test_windows_equal_the_full_scan_and_binned_windows_the_binned_chi2():
    rng = np.random.default_rng(1)
    ts = [TemplateSet(c, c, rng.standard_normal((4, FIT_REST_NPIX)), shift_range(c)) for c in ('GALAXY', 'QSO')]
    f = rng.standard_normal((3, NPIX))
    wd = window_designs(ts)
    chi, sh = scan_windows(f - (f @ wd.P.T) @ wd.P, np.ones(3), wd, np.array([[0, 1]] * 3), np.array([[500, 4000]] * 3), 5)
    for g in (0, 1):
        full = chi2_scan(f, design(ts[g]))
        np.testing.assert_allclose(chi[:, g], np.take_along_axis(full, sh[:, g] - ts[g].shifts[0], 1), atol=1e-2)
    w4 = window_designs(ts, q=4)
    fq = bin_pixels(f, 4)
    chi4, sh4 = scan_windows(fq - (fq @ w4.P.T) @ w4.P, np.ones(3), w4, np.array([[1]] * 3), np.array([[2001]] * 3), 3)
    for j, s in enumerate(sh4[0, 0]):  # the binned chi2 by least squares on the binned template window
        T = bin_pixels(ts[1].basis[:, S_MAX - s : S_MAX - s + NPIX], 4)
        A = np.concatenate([T, w4.P]).T
        for r in range(3):
            res = fq[r] - A @ np.linalg.lstsq(A, fq[r], rcond=None)[0]
            assert chi4[r, 0, j] == pytest.approx((res**2).sum(), rel=1e-4)


def test_classes_workers_and_empty_input(sets, ht):
    zt = np.array([0.2, 2.0, 0.3, 1.1])
    flux = np.stack([observe(sets[0], 0.2), observe(sets[1], 2.0), observe(sets[0], 0.3), observe(sets[1], 1.1)]) * 10
    flux += 0.05 * np.random.default_rng(2).standard_normal(flux.shape)
    p = posterior(zt)
    a = hybrid_redshift(flux, p, LZ_EDGES, ht, batch=1, workers=1)
    b = hybrid_redshift(flux, p, LZ_EDGES, ht, batch=1, workers=2)
    np.testing.assert_array_equal(a.z_pred, b.z_pred)  # threads change nothing
    # a classifier's class: only that class's templates; no candidate inside its window: the network's peak and Z_FITLIMIT
    c = hybrid_redshift(flux, p, LZ_EDGES, ht, classes=['GALAXY', 'QSO', 'QSO', 'GALAXY'])
    assert list(c.z_class) == ['GALAXY', 'QSO', 'QSO', ''] and abs(c.z_pred[0] - 0.2) < 1e-4
    assert abs(c.z_pred[3] - 1.1) < 0.01 and c.zwarning[3] & ZWARNING_Z_FITLIMIT and c.z_err[3] > 0
    e = hybrid_redshift(flux[:0], p[:0], LZ_EDGES, ht)
    assert len(e) == 0 and {'z_pred', 'z_err', 'zwarning', 'delta_chi2', 'rv_kms'} <= set(e.columns)


def test_floor_coverage_and_saved_templates(sets, ht, tmp_path):
    rng = np.random.default_rng(0)
    dz = rng.normal(0, 1e-3, 2000)
    assert zerr_floor(dz, np.full(2000, 1e-4), np.zeros(2000)) == pytest.approx(1e-3, rel=0.1)
    assert zerr_floor(dz * 0.01, np.full(2000, 1e-4), np.zeros(2000)) == 0.0
    zt = np.array([0.2, 2.0])
    flux = np.stack([observe(sets[0], 0.2), observe(sets[1], 2.0)]) * 10
    h = hybrid_redshift(flux, posterior(zt, 0.003), LZ_EDGES, ht)
    assert candidate_coverage(h, zt, ['GALAXY', 'QSO']) == dict(GALAXY=1.0, QSO=1.0, STAR=None)
    assert candidate_coverage(h, [0.5, 0.5], ['GALAXY', 'QSO'], 'z_peak') == dict(GALAXY=0.0, QSO=0.0, STAR=None)
    save_hybrid(tmp_path, hybrid_templates(sets, z_err_floor={'QSO': 2e-3}), dict(n_cand=3))
    with np.load(tmp_path / TEMPLATES_NPZ, allow_pickle=False) as z:  # plain arrays, no pickle
        assert z['basis_0'].dtype == np.float32
    back, settings = load_hybrid(tmp_path)
    assert settings == dict(n_cand=3) and back.z_err_floor == {'QSO': 2e-3}
    h2 = hybrid_redshift(flux, posterior(zt, 0.003), LZ_EDGES, back)
    np.testing.assert_allclose(h2.z_pred, h.z_pred, atol=1e-6)
    assert h2.z_err[1] == pytest.approx(np.hypot(h.z_err_fit[1], 2e-3 * 3.0), rel=1e-3)


def test_sets_with_fewer_eigen_templates_are_padded(sets):
    "A set built from fewer spectra than k has fewer eigen-templates (pca_basis): stacked with zero rows, same fit."
    small = [TemplateSet(t.name, t.cls, t.basis[:3], t.shifts) for t in sets[:2]] + [sets[2]]
    zt = np.array([0.3, 2.0])
    flux = np.stack([observe(small[0], 0.3), observe(small[1], 2.0)]) * 10
    h = hybrid_redshift(flux, posterior(zt, 0.003), LZ_EDGES, hybrid_templates([small[0], sets[1], small[2]]))
    assert list(h.z_class) == ['GALAXY', 'QSO'] and (np.abs(h.z_pred - zt) / (1 + zt) < 1e-4).all()
    star2 = TemplateSet('STAR:M', 'STAR', sets[2].basis[:2], sets[2].shifts)
    h2 = hybrid_redshift(flux, posterior(zt, 0.003), LZ_EDGES, hybrid_templates(small + [star2]))
    assert (np.abs(h2.z_pred - zt) / (1 + zt) < 1e-4).all()


def test_the_pretrained_redshift_model_is_scored_on_the_real_set(tmp_path):
    "`real_sdss.score_redshift`: network and hybrid against SDSS's redshifts, per class, each clean object once."
    from spectral_nb.classify import default_model
    from spectral_nb.real_sdss import load_real_dev, write_real_dev, score_redshift
    cat, pix = load_real_dev()
    s = score_redshift(default_model('redshift'), write_real_dev(tmp_path / 'real.parquet', cat, pix), cat)
    clean = cat[cat['zWarning'] == 0].drop_duplicates('obj_group')
    for meth in ('network', 'hybrid'):
        assert s[meth]['n'] == {c: int((clean['class'] == c).sum()) for c in ('GALAXY', 'QSO', 'STAR')}, s[meth]['n']
        assert all(0 <= s[meth]['outlier_fraction'][c] <= 1 for c in ('GALAXY', 'QSO', 'STAR'))
    assert 'fraction_flagged' in s['hybrid'] and 'fraction_flagged' not in s['network']
    # the hybrid refines the network: on real galaxies and quasars its redshifts are the more precise
    for c in ('GALAXY', 'QSO'):
        assert s['hybrid']['sigma_nmad'][c] < s['network']['sigma_nmad'][c], (c, s['hybrid']['sigma_nmad'], s['network']['sigma_nmad'])


def test_where_the_templates_cannot_choose_the_networks_posterior_does(sets):
    "Two redshifts the periodic templates fit equally well: with the posterior as the prior (the default) the hybrid takes the peak with more mass, whichever it is; with prior=0 the templates alone choose, the same one both times."
    htp, f, z1, z2 = periodic_quasars(sets)
    f = f[None]
    for w1, z_expected in ((0.8, z1), (0.2, z2)):
        p = w1 * posterior([z1]) + (1 - w1) * posterior([z2])
        assert abs(hybrid_redshift(f, p, LZ_EDGES, htp).z_pred[0] - z_expected) / (1 + z_expected) < 1e-3, w1
    alone = [hybrid_redshift(f, w1 * posterior([z1]) + (1 - w1) * posterior([z2]), LZ_EDGES, htp, prior=0).z_pred[0]
             for w1 in (0.8, 0.2)]
    assert alone[0] == pytest.approx(alone[1], rel=1e-6)
