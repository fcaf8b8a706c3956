"A small run folder for the explorer's tests: a mock survey, a compact CNN and (optionally) the autoencoder and the redshift network."

from pathlib import Path

from spectral_nb.config import RUN_LAYOUT, SEED


def make_demo_run(
    out, n: int = 300, seed: int = SEED, epochs: int = 2, autoencoder: bool = True, redshift: bool = True
) -> Path:
    "A run folder laid out as `spectral-nb reproduce` lays it out (RUN_LAYOUT): a mock survey of `n` spectra, preprocessed, a compact CNN, and (optionally) the autoencoder and the redshift network."
    from spectral_nb.mock import write_mock
    from spectral_nb.preprocess import preprocess
    from spectral_nb.cnn import train_compact_cnn

    out = Path(out)
    (out / RUN_LAYOUT.data).mkdir(parents=True, exist_ok=True)
    raw = write_mock(out / RUN_LAYOUT.data, n, seed, progress=False)
    h5 = out / RUN_LAYOUT.dataset
    preprocess(raw, h5, progress=False)
    train_compact_cnn(h5, out / RUN_LAYOUT.cnn, epochs, seed, figures=False)
    if autoencoder:
        from spectral_nb.autoencoder import run_autoencoder

        run_autoencoder(h5, out / RUN_LAYOUT.autoencoder, 'smoke', seed)
    if redshift:
        from spectral_nb.redshift import train_redshift_cnn

        train_redshift_cnn(h5, out / RUN_LAYOUT.redshift, epochs, seed)
    return out
