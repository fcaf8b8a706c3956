"The redshift stage (issue 11; the hybrid of 08e_hybrid_z): training, saved bundle with its templates, `predict_redshift`, and `spectral-nb predict --redshift-model [--z-method]`."
import numpy as np, pandas as pd, pytest


@pytest.fixture(scope='module')
def zrun(tmp_path_factory, mock_dataset):
    d = tmp_path_factory.mktemp('redshift')
    raw, h5 = mock_dataset(400, 5)
    from spectral_nb.redshift import train_redshift_cnn
    path, m = train_redshift_cnn(h5, d / 'run', epochs=2, seed=3)
    return d, raw, h5, path, m


def test_metrics_agree_with_the_saved_predictions(zrun):
    d, raw, h5, path, m = zrun
    from spectral_nb.baselines import redshift_metrics
    pz = pd.read_csv(d / 'run' / 'redshift_cnn_compact_z.csv')
    assert m['n_test'] == len(pz) and (d / 'run' / 'z_pred_cnn_compact_z.png').stat().st_size > 5000
    assert (d / 'run' / 'z_hybrid_cnn_compact_z.png').stat().st_size > 5000
    for method, zc, ec in (('network', 'z_network', 'z_network_err'), ('hybrid', 'z_pred', 'z_err'),
                           ('template', 'z_template', 'z_template_err')):
        mm = m['methods'][method]
        ref = redshift_metrics(pz[zc], pz.z, pz.label_main)
        for c in ('GALAXY', 'QSO', 'STAR'):
            if ref[c]['n']:
                assert mm['sigma_nmad'][c] == pytest.approx(ref[c]['sigma_nmad'], abs=1e-12)
                assert mm['outlier_fraction'][c] == pytest.approx(ref[c]['outlier_fraction'], abs=1e-12)
        for k in (1, 2):
            within = np.abs(pz[zc] - pz.z) <= k * pz[ec]
            assert mm[f'within_{k}_zerr']['GALAXY'] == pytest.approx(within[pz.label_main == 'GALAXY'].mean(), abs=1e-12)
        assert mm['spectra_per_s'] > 0 and mm['spectra_per_cpu_s'] > 0
    assert m['sigma_nmad'] == m['methods']['hybrid']['sigma_nmad']  # the top level: what predict_redshift writes by default
    assert m['predict_spectra_per_s'] == m['methods']['hybrid']['spectra_per_s']
    for method in ('network', 'hybrid'):
        cov = m['methods'][method]['candidates_contain_truth']
        assert all(v is None or 0 <= v <= 1 for v in cov.values())
    assert set(m['z_err_floor']) <= {'GALAXY', 'QSO', 'STAR'}
    assert (path / 'templates.npz').is_file() and (path / 'templates.json').is_file()


def test_predict_redshift_reproduces_the_test_split_from_h5_and_raw(zrun):
    d, raw, h5, path, m = zrun
    from spectral_nb.redshift import predict_redshift
    a = predict_redshift(path, h5).set_index('specObjID')
    b = predict_redshift(path, raw).set_index('specObjID')
    pz = pd.read_csv(d / 'run' / 'redshift_cnn_compact_z.csv').set_index('specObjID')
    assert list(a.columns) == ['z_pred', 'z_err', 'zwarning', 'delta_chi2', 'z_class', 'rv_kms', 'z_network', 'z_network_err']
    np.testing.assert_allclose(a.loc[pz.index, 'z_network'], pz.z_network, atol=1e-4)
    assert (np.abs(a.loc[pz.index, 'z_pred'] - pz.z_pred) < 1e-4).mean() > 0.98  # the templates travel in the folder
    common = a.index.intersection(b.index)
    assert len(common) > 0.9 * len(a)
    np.testing.assert_allclose(a.loc[common, 'z_network'], b.loc[common, 'z_network'], atol=1e-4)
    assert (np.abs(a.loc[common, 'z_pred'] - b.loc[common, 'z_pred']) < 1e-4).mean() > 0.98
    stars = a.z_class == 'STAR'
    np.testing.assert_allclose(a.rv_kms[stars], 299792.458 * a.z_pred[stars])
    assert a.rv_kms[~stars].isna().all()
    n = predict_redshift(path, h5, method='network')
    assert list(n.columns) == ['specObjID', 'z_pred', 'z_err']
    np.testing.assert_allclose(n.z_pred, a.z_network.to_numpy(), atol=1e-9)


def test_a_bundle_without_templates_predicts_with_the_network_only(zrun, tmp_path, caplog):
    import shutil
    from spectral_nb.redshift import predict_redshift
    d, raw, h5, path, m = zrun
    old = tmp_path / 'old'
    shutil.copytree(path, old)
    (old / 'templates.json').unlink()
    got = predict_redshift(old, h5)
    assert list(got.columns) == ['specObjID', 'z_pred', 'z_err'] and 'carries no templates' in caplog.text
    np.testing.assert_allclose(got.z_pred, predict_redshift(path, h5, method='network').z_pred, atol=1e-9)
    with pytest.raises(ValueError, match="'hybrid' or 'network'"):
        predict_redshift(path, h5, method='template')


def test_cli_predict_writes_z_columns_and_refuses_a_classifier_as_redshift_model(zrun, tmp_path):
    d, raw, h5, path, m = zrun
    from spectral_nb.cli import main
    from spectral_nb.cnn import train_compact_cnn
    cls, _ = train_compact_cnn(h5, d / 'cls', epochs=1, seed=1)
    out = tmp_path / 'p.csv'
    assert main(['-q', 'predict', '--model', str(cls), '--data', str(h5), '--out', str(out), '--redshift-model', str(path)]) == 0
    p = pd.read_csv(out)
    assert {'prob_GALAXY', 'prob_QSO', 'prob_STAR', 'predicted', 'z_pred', 'z_err', 'zwarning', 'delta_chi2', 'rv_kms',
            'z_network', 'z_network_err'} <= set(p.columns)
    assert len(p) == len(pd.read_hdf(h5, 'source_info')) and np.isfinite(p.z_network).all() and (p.z_network_err > 0).all()
    assert np.isfinite(p.z_pred).mean() > 0.99 and (p.z_err > 0).mean() > 0.95  # NaN: no curvature (flagged)
    net = tmp_path / 'n.csv'
    assert main(['-q', 'predict', '--model', str(cls), '--data', str(h5), '--out', str(net), '--redshift-model', str(path),
                 '--z-method', 'network']) == 0
    pn = pd.read_csv(net)
    assert 'zwarning' not in pn and np.allclose(pn.z_pred, p.z_network, atol=1e-9)
    assert main(['-q', 'predict', '--model', str(cls), '--data', str(h5), '--out', str(tmp_path / 'q.csv'), '--redshift-model', str(cls)]) == 2
    assert main(['-q', 'predict', '--model', str(cls), '--data', str(h5), '--out', str(tmp_path / 'r.csv'), '--redshift-model', str(tmp_path / 'no')]) == 2


def test_bin_head_reads_a_peak_finely_and_widens_the_error_of_two_peaks():
    from spectral_nb.redshift import Z_BIN_EDGES, from_bins, from_u, to_bin, to_u
    cen = 0.5 * (Z_BIN_EDGES[1:] + Z_BIN_EDGES[:-1])
    z_true = np.array([0.1234, 2.5])
    u = to_u(z_true)
    p = np.exp(-0.5 * ((cen[None] - u[:, None]) / 0.02) ** 2); p /= p.sum(1, keepdims=True)   # one narrow peak, off bin centre
    zp, ze = from_bins(p)
    assert (np.abs(zp - z_true) / (1 + z_true) < 1e-4).all(), zp          # finer than a bin (0.58% in 1 + z)
    np.testing.assert_allclose(ze / (1 + z_true), np.log(10) * 0.1 * 0.02, rtol=0.3)   # the peak is 0.02 u wide
    two = p[1] * 0.5 + np.roll(p[1], -60) * 0.5                           # a second, equal peak far away: Lya or MgII?
    _, ze2 = from_bins(two[None])
    assert ze2[0] > 10 * ze[1]   # 0.30 against 0.016
    np.testing.assert_array_equal(to_bin(z_true), np.digitize(u, Z_BIN_EDGES) - 1)
    assert to_bin([9.0])[0] == len(cen) - 1 and to_bin([-0.5])[0] == 0    # beyond the ends: the end bins
    z_old, e_old = from_u(np.array([[u[0], np.log(0.01)]]))                # a (mean, log sigma) head of an older bundle
    assert abs(z_old[0] - z_true[0]) < 1e-6 and e_old[0] > 0
