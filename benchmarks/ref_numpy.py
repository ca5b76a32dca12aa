"""NumPy reference implementations of google/svcca's algorithms, for benchmarking.

Written from the published description of the algorithms (see `fixtures/golden/README.md`), not
copied from google's code. They follow google's arithmetic step by step so that the timings and
memory are those of the computation a google/svcca user runs today, and so that the numbers match
the golden reference data (checked by `check_golden.py`):

- `get_cca_similarity`: covariance of the stacked inputs (`np.cov`, float64), each side's block
  rescaled by its own largest |entry|, near-constant neurons dropped (`remove_small`: rescaled
  variance below epsilon), `epsilon * I` added to both diagonals, `pinv`, inverse square root by
  `eigh` of the pseudo-inverse, then the singular values of `Sxx^-1/2 Sxy Syy^-1/2` (a full SVD, as
  google computes the directions too), plus google's truncated mean at `threshold`.
- `svcca_recipe`: google's tutorial SVCCA: centre each neuron, thin SVD of the data matrix, keep the
  top k directions (fixed k or a variance fraction), project as `s[:k, None] * Vt[:k]`, then CCA with
  epsilon 1e-10.
- `fourier_ccas`: 2-D DFT over (h, w) in complex64, one complex CCA per spatial frequency with
  effective epsilon 0 (google passes `compute_dirns` into the epsilon slot), threshold 0.98, and the
  centred low-frequency crop when spatial sizes differ (square maps only).

Plus, for the all-pairs sweep benchmark, the covariance route a careful NumPy user writes (no SVD of
the data: eigendecomposition of the covariance, whitening, SVD of the whitened cross-covariance):
`whiten` and `cca_whitened`.

google's layout is `[neurons, datapoints]` for dense inputs and `[images, h, w, channels]` for conv.
"""

import numpy as np


def sum_threshold(s, threshold):
    """google's cut-off: the first i with sum(s[:i]) / sum(s) >= threshold."""
    total = np.sum(s)
    for i in range(len(s)):
        if np.sum(s[:i]) / total >= threshold:
            return i
    # google's loop falls through here only when threshold is (numerically) 1; it then returns None
    # and its mean is over s[:None], i.e. all coefficients.
    return len(s)


def _psd_inv_sqrt_of_pinv(inv):
    """Square root of the (pseudo-)inverse via its eigendecomposition, as google does."""
    w, v = np.linalg.eigh(inv)
    wsqrt = np.sqrt(w)
    return v @ np.diag(wsqrt) @ np.conj(v).T


def get_cca_similarity(acts1, acts2, epsilon=0.0, threshold=0.98):
    """CCA between `[neurons, datapoints]` arrays with google's arithmetic. Returns a dict."""
    numx, numy = acts1.shape[0], acts2.shape[0]
    if not (numx < acts1.shape[1] and numy < acts2.shape[1]):
        raise ValueError("fewer neurons than datapoints required")
    cov = np.cov(np.concatenate((acts1, acts2), axis=0))
    sxx = cov[:numx, :numx]
    sxy = cov[:numx, numx:]
    syy = cov[numx:, numx:]

    # Each side rescaled by its own largest entry; the cross block by the geometric mean.
    xmax = np.max(np.abs(sxx))
    ymax = np.max(np.abs(syy))
    sxx = sxx / xmax
    syy = syy / ymax
    sxy = sxy / np.sqrt(xmax * ymax)

    # remove_small: epsilon is a relative variance cut-off after the rescaling.
    x_keep = np.abs(np.diagonal(sxx)) >= epsilon
    y_keep = np.abs(np.diagonal(syy)) >= epsilon
    sxx = sxx[x_keep][:, x_keep]
    syy = syy[y_keep][:, y_keep]
    sxy = sxy[x_keep][:, y_keep]

    kx, ky = sxx.shape[0], syy.shape[0]
    sxx = sxx + epsilon * np.eye(kx)
    syy = syy + epsilon * np.eye(ky)
    inv_xx = np.linalg.pinv(sxx)
    inv_yy = np.linalg.pinv(syy)
    invsqrt_xx = _psd_inv_sqrt_of_pinv(inv_xx)
    invsqrt_yy = _psd_inv_sqrt_of_pinv(inv_yy)

    arr = invsqrt_xx @ sxy @ invsqrt_yy
    # google takes the full SVD (its directions come from u and v).
    u, s, vh = np.linalg.svd(arr)
    s = np.abs(s)

    # google also returns the whitening and rotation embedded in full neuron-sized matrices.
    full_invsqrt_xx = np.zeros((numx, numx), dtype=invsqrt_xx.dtype)
    full_invsqrt_xx[np.ix_(x_keep, x_keep)] = invsqrt_xx
    full_invsqrt_yy = np.zeros((numy, numy), dtype=invsqrt_yy.dtype)
    full_invsqrt_yy[np.ix_(y_keep, y_keep)] = invsqrt_yy

    n_terms = sum_threshold(s, threshold)
    return {
        "cca_coef1": s,
        "mean": float(np.mean(s[:n_terms])),
        "mean_n_terms": n_terms,
        "mean_all_coefs": float(np.mean(s)),
        "sum": float(np.sum(s)),
        "x_kept": int(kx),
        "y_kept": int(ky),
        "x_removed_idx": np.flatnonzero(~x_keep).tolist(),
        "y_removed_idx": np.flatnonzero(~y_keep).tolist(),
        "_dirs": (u, vh, full_invsqrt_xx, full_invsqrt_yy),
    }


def keep_by_variance(s, keep):
    """Smallest k with sum(s[:k]^2) / sum(s^2) >= keep (s: singular values, descending)."""
    var = s.astype(np.float64) ** 2
    frac = np.cumsum(var) / np.sum(var)
    return min(int(np.searchsorted(frac, keep) + 1), len(s))


def svd_reduce(acts, k=None, keep=0.99):
    """google's tutorial SVD step: centre, thin SVD of the data, project onto the top k."""
    cacts = acts - np.mean(acts, axis=1, keepdims=True)
    _, s, vt = np.linalg.svd(cacts, full_matrices=False)
    if k is None:
        k = keep_by_variance(s, keep)
    return s[:k, None] * vt[:k], k, s


def svcca_recipe(acts1, acts2, k=None, keep=0.99, epsilon=1e-10):
    """google's SVCCA tutorial recipe on `[neurons, datapoints]` arrays."""
    sv1, k1, s1 = svd_reduce(acts1, k, keep)
    sv2, k2, s2 = svd_reduce(acts2, k, keep)
    res = get_cca_similarity(sv1, sv2, epsilon=epsilon)
    res.update({"k1": k1, "k2": k2, "svd1": s1, "svd2": s2})
    return res


def fft_crop(fft, new_size):
    """Keep the centred low frequencies of an `[n, h, w, c]` spectrum, in DFT order again."""
    h = fft.shape[1]
    shifted = np.fft.fftshift(fft, axes=(1, 2))
    start = (h - new_size) // 2
    cropped = shifted[:, start : start + new_size, start : start + new_size, :]
    return np.fft.ifftshift(cropped, axes=(1, 2))


def fourier_ccas(acts1, acts2, epsilon=0.0, threshold=0.98):
    """Per-frequency complex CCA of `[images, h, w, channels]` arrays, as google's fourier_ccas."""
    if acts1.shape[1] != acts1.shape[2] or acts2.shape[1] != acts2.shape[2]:
        raise ValueError("google's DFT method needs square maps")
    # complex64 FFT, as google's: single-precision input gives a complex64 transform in NumPy 2.
    f1 = np.fft.fft2(acts1.astype(np.float32), axes=(1, 2))
    f2 = np.fft.fft2(acts2.astype(np.float32), axes=(1, 2))
    resized = acts1.shape[1] != acts2.shape[1]
    if resized:
        size = min(acts1.shape[1], acts2.shape[1])
        if f1.shape[1] > size:
            f1 = fft_crop(f1, size)
        if f2.shape[1] > size:
            f2 = fft_crop(f2, size)
    h, w = f1.shape[1], f1.shape[2]
    locations = []
    for i in range(h):
        for j in range(w):
            r = get_cca_similarity(f1[:, i, j, :].T, f2[:, i, j, :].T, epsilon=epsilon, threshold=threshold)
            locations.append({"location": [i, j], "cca_coef1": r["cca_coef1"], "mean": r["mean"], "sum": r["sum"]})
    all_coefs = np.concatenate([loc["cca_coef1"] for loc in locations])
    return {
        "locations": locations,
        "n_locations": len(locations),
        "mean_all_coefs": float(np.mean(all_coefs)),
        "mean_of_location_means": float(np.mean([np.mean(loc["cca_coef1"]) for loc in locations])),
        "sum_all_coefs": float(np.sum(all_coefs)),
        "resized": bool(resized),
    }


# ---------------------------------------------------------------------------------------------
# The covariance route (what a careful NumPy user writes for SVCCA without an SVD of the data).


def whiten(x, keep=0.99):
    """`x`: `[datapoints, neurons]`. Returns Z `[datapoints, k]` with Zᵀ Z / (n-1) = I_k.

    Centre in float64, Gram matrix (a `syrk`: `xc.T @ xc`), eigendecomposition, keep the top k
    eigen-directions by variance fraction, project and scale to unit variance. Z spans the same
    subspace as google's `s[:k, None] * Vt[:k]`, so the canonical correlations are SVCCA's
    (without google's epsilon ridge, which moves them by ~1e-10).
    """
    xc = np.asarray(x, dtype=np.float64)
    xc = xc - xc.mean(axis=0)
    n = xc.shape[0]
    cov = xc.T @ xc
    cov /= n - 1
    w, v = np.linalg.eigh(cov)
    w = w[::-1]
    v = v[:, ::-1]
    w = np.clip(w, 0.0, None)
    frac = np.cumsum(w) / np.sum(w)
    k = min(int(np.searchsorted(frac, keep) + 1), len(w))
    proj = v[:, :k] / np.sqrt(w[:k])
    return xc @ proj


def cca_whitened(z1, z2):
    """Canonical correlations of two whitened blocks (descending)."""
    n = z1.shape[0]
    return np.linalg.svd((z1.T @ z2) / (n - 1), compute_uv=False)
