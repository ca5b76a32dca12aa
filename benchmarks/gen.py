"""Deterministic synthetic activations for the benchmarks, written as float32 `.npy` files.

Every array is `[datapoints, neurons]` (C order) or `[images, h, w, channels]`, float32, from NumPy's
PCG64 with fixed seeds, written in row blocks through a memory map so that files larger than RAM
could be made (the 500,000-datapoint files are 1 GB each).

Realistic spectra: a layer is `(Z · S) A + σ E` with a latent signal Z `[n, r]` (standard normal),
decaying scales S = diag(1/sqrt(i+1)), a random mixing A `[r, d]` and isotropic noise E. σ is set so
that the noise holds `noise_frac` of the total variance (default 0.3%), so keeping 99% of the
variance keeps about r directions (a few fewer: the tail of the signal also falls under the 1%),
as real layers do (the digits MLP's h1 keeps 66 of 128). Two layers compared share their latent.
"""

import numpy as np
from numpy.lib.format import open_memmap

BLOCK_ROWS = 25_000


def _noise_sigma(r, noise_frac):
    # Signal variance per neuron is sum(s_i^2) / r with A ~ N(0, 1/r); noise variance is sigma^2.
    sig = np.sum(1.0 / np.arange(1, r + 1)) / r
    return float(np.sqrt(noise_frac / (1.0 - noise_frac) * sig))


def _scales(r):
    return 1.0 / np.sqrt(np.arange(1, r + 1))


def write_layers(paths, n, d, latent_fn, mixings, sigma, seed):
    """Writes `len(paths)` layers `[n, d]`; latent_fn(rng, rows) -> list of latent blocks per layer."""
    outs = [open_memmap(p, mode="w+", dtype=np.float32, shape=(n, d)) for p in paths]
    rng = np.random.default_rng(seed)
    for start in range(0, n, BLOCK_ROWS):
        rows = min(BLOCK_ROWS, n - start)
        latents = latent_fn(rng, rows)
        for out, z, a in zip(outs, latents, mixings):
            block = z @ a
            block += sigma * rng.standard_normal((rows, d))
            out[start : start + rows] = block.astype(np.float32)
    for out in outs:
        out.flush()
        del out


def dense_pair(path_x, path_y, n, d, rank, seed, noise_frac=0.003):
    """Two `[n, d]` layers sharing a rank-`rank` latent signal (different mixings, independent noise)."""
    rng = np.random.default_rng(seed)
    s = _scales(rank)
    mix = [rng.standard_normal((rank, d)) / np.sqrt(rank) for _ in range(2)]
    sigma = _noise_sigma(rank, noise_frac)

    def latent(rng_, rows):
        z = rng_.standard_normal((rows, rank)) * s
        return [z, z]

    write_layers([path_x, path_y], n, d, latent, mix, sigma, seed + 1)


def sweep_reps(paths_by_key, n, d, rank, seed, noise_frac=0.003, layer_angle=0.3):
    """Many layers over one probe set: `paths_by_key` maps (seed, layer) -> path.

    Layer l's latent is cos(l·θ) Z0 + sin(l·θ) W_l, with Z0 shared by all and W_l private to the
    layer; seeds of one layer share its latent but mix it differently. So same-layer pairs are very
    similar and the similarity falls with the layer distance, like a real seeds × layers sweep.
    """
    keys = sorted(paths_by_key)
    layers = sorted({layer for _, layer in keys})
    rng = np.random.default_rng(seed)
    s = _scales(rank)
    mix = [rng.standard_normal((rank, d)) / np.sqrt(rank) for _ in keys]
    sigma = _noise_sigma(rank, noise_frac)

    def latent(rng_, rows):
        z0 = rng_.standard_normal((rows, rank))
        per_layer = {}
        for li, layer in enumerate(layers):
            w = rng_.standard_normal((rows, rank))
            t = li * layer_angle
            per_layer[layer] = (np.cos(t) * z0 + np.sin(t) * w) * s
        return [per_layer[layer] for _, layer in keys]

    write_layers([paths_by_key[k] for k in keys], n, d, latent, mix, sigma, seed + 1)


def conv_pair(path_x, path_y, images, h, w, c, seed, noise=0.3):
    """`[images, h, w, c]` standard normal activations and a channel-mixed copy plus noise."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((images, h, w, c), dtype=np.float32)
    m = (rng.standard_normal((c, c)) / np.sqrt(c)).astype(np.float32)
    b = a @ m + noise * rng.standard_normal((images, h, w, c), dtype=np.float32)
    np.save(path_x, a)
    np.save(path_y, b.astype(np.float32))
