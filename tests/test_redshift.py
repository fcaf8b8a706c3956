"The network redshift (issue 11): training, saved bundle, `predict_redshift`, and `spectral-nb predict --redshift-model`."
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
    ref = redshift_metrics(pz.z_pred, pz.z, pz.label_main)
    assert m['n_test'] == len(pz) and (d / 'run' / 'z_pred_cnn_compact_z.png').stat().st_size > 5000
    for c in ('GALAXY', 'QSO', 'STAR'):
        if ref[c]['n']: assert m['sigma_nmad'][c] == pytest.approx(ref[c]['sigma_nmad'], abs=1e-12)
    within = (np.abs(pz.z_pred - pz.z) <= pz.z_err)
    assert m['within_1_zerr']['GALAXY'] == pytest.approx(within[pz.label_main == 'GALAXY'].mean(), abs=1e-12)


def test_predict_redshift_reproduces_the_test_split_from_h5_and_raw(zrun):
    d, raw, h5, path, m = zrun
    from spectral_nb.redshift import predict_redshift
    a = predict_redshift(path, h5).set_index('specObjID')
    b = predict_redshift(path, raw).set_index('specObjID')
    pz = pd.read_csv(d / 'run' / 'redshift_cnn_compact_z.csv').set_index('specObjID')
    np.testing.assert_allclose(a.loc[pz.index, 'z_pred'], pz.z_pred, atol=1e-4)
    common = a.index.intersection(b.index)
    assert len(common) > 0.9 * len(a)
    np.testing.assert_allclose(a.loc[common, 'z_pred'], b.loc[common, 'z_pred'], atol=1e-4)


def test_cli_predict_writes_z_columns_and_refuses_a_classifier_as_redshift_model(zrun, tmp_path):
    d, raw, h5, path, m = zrun
    from spectral_nb.cli import main
    from spectral_nb.cnn import train_compact_cnn
    cls, _ = train_compact_cnn(h5, d / 'cls', epochs=1, seed=1)
    out = tmp_path / 'p.csv'
    assert main(['-q', 'predict', '--model', str(cls), '--data', str(h5), '--out', str(out), '--redshift-model', str(path)]) == 0
    p = pd.read_csv(out)
    assert {'prob_GALAXY', 'prob_QSO', 'prob_STAR', 'predicted', 'z_pred', 'z_err'} <= set(p.columns)
    assert len(p) == len(pd.read_hdf(h5, 'source_info')) and np.isfinite(p.z_pred).all() and (p.z_err > 0).all()
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
