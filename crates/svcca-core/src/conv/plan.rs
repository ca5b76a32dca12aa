//! The frequency grid of a comparison: which spatial frequency of each layer sits at each
//! location, which locations are conjugates of each other, and which are computed.
//!
//! # Crop (layers of different spatial size)
//! google's `fft_resize` keeps, along an axis of size `N` cropped to `M ≤ N`, the signed
//! frequencies `f` with `−M/2 ≤ f < M/2`, in index order: location `k ∈ 0..M` holds the signed
//! frequency `f_k = k` for `k < ⌈M/2⌉` and `f_k = k − M` otherwise (numpy's `fftfreq(M)·M`),
//! read from index `f_k mod N` of the larger layer. The smaller layer is not cropped. google
//! does this only for square maps (the same index set on both axes); the default mode applies
//! the same rule to each axis independently, so non-square maps work, and a layer that is
//! smaller along one axis and larger along the other is cropped on each axis as needed.
//!
//! # Conjugate symmetry
//! For real input, `X(−f) = conj X(f)`. Two locations are *conjugate* when, in both layers, the
//! frequency at one is the negation (modulo that layer's size) of the frequency at the other:
//! their per-frequency covariances are complex conjugates of each other, so their canonical
//! correlations are identical and only the *representative* (the first in row-major order) is
//! accumulated and computed. After a crop to an even size `M`, the kept frequency `−M/2` of the
//! larger layer has no kept partner (`+M/2` was cropped): such locations are computed on their
//! own. Without a crop about half of the `h·w` locations are representatives
//! (`⌊hw/2⌋ + 1..4`).

use serde::{Deserialize, Serialize};

use super::error::{ConvError, Side};
use super::input::SpatialShape;
use super::{ConvMethod, ConvOptions};
use crate::whiten::Mode;

/// One location of the compared grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Row of the location in the compared grid (numpy's FFT index order).
    pub i: usize,
    /// Column of the location in the compared grid.
    pub j: usize,
    /// Frequency index `(row, col)` read from the x layer's spectrum.
    pub x_source: (usize, usize),
    /// Frequency index `(row, col)` read from the y layer's spectrum.
    pub y_source: (usize, usize),
    /// Row-major index of the conjugate location, if it exists and is another location.
    pub conjugate: Option<usize>,
    /// True when this location is the one computed for its conjugate pair (or has none).
    pub representative: bool,
}

/// Everything about a comparison that the images do not change: shapes, method, grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvPlan {
    method: ConvMethod,
    x: SpatialShape,
    y: SpatialShape,
    grid: (usize, usize),
    cropped: bool,
    /// The FFT values are rounded to complex64 (google-compat DFT).
    complex64: bool,
    locations: Vec<Location>,
    representatives: Vec<usize>,
}

/// `numpy.fft.fftfreq(m) * m` at index `k`.
fn signed_freq(k: usize, m: usize) -> i64 {
    if k < m.div_ceil(2) {
        k as i64
    } else {
        k as i64 - m as i64
    }
}

fn source_index(k: usize, m: usize, n: usize) -> usize {
    signed_freq(k, m).rem_euclid(n as i64) as usize
}

/// Whether a real layer of spatial size `layer` (`(h, w)`) has real DFT values at location
/// `(i, j)` of a compared `grid` (`(rows, cols)`, after the crop rule above): the frequency
/// read there is its own negation (the zero frequency and, along an even axis, the
/// `N/2` one). Elsewhere the values are complex, and that side of the location's CCA runs on
/// complex data.
pub fn real_at(i: usize, j: usize, grid: (usize, usize), layer: (usize, usize)) -> bool {
    let (h, w) = layer;
    let (a, b) = (source_index(i, grid.0, h), source_index(j, grid.1, w));
    (h - a) % h == a && (w - b) % w == b
}

impl ConvPlan {
    /// Whether location `index` holds real values on each side `(x, y)`; see [`real_at`].
    pub fn real_sides(&self, index: usize) -> (bool, bool) {
        let l = self.locations[index];
        (
            real_at(l.i, l.j, self.grid, (self.x.height, self.x.width)),
            real_at(l.i, l.j, self.grid, (self.y.height, self.y.width)),
        )
    }

    /// Plans the comparison of a layer of per-image shape `x` with one of shape `y`.
    ///
    /// * DFT: the grid is `min(h) × min(w)` (crop as in the module docs); google-compat mode
    ///   refuses a crop of non-square maps ([`ConvError::NonSquareResize`]).
    /// * fold: the same grid (fold is computed from the cropped spectra, see [`crate::conv`]).
    /// * pool: a single location, the zero frequency of each layer (any sizes).
    pub fn new(x: SpatialShape, y: SpatialShape, options: &ConvOptions) -> Result<Self, ConvError> {
        x.check(Side::X)?;
        y.check(Side::Y)?;
        let method = options.method;
        let (gh, gw) = match method {
            ConvMethod::Pool => (1, 1),
            ConvMethod::Dft | ConvMethod::Fold => (x.height.min(y.height), x.width.min(y.width)),
        };
        let cropped = method != ConvMethod::Pool && (x.height != y.height || x.width != y.width);
        if cropped
            && options.mode == Mode::GoogleCompat
            && method == ConvMethod::Dft
            && (x.height != x.width || y.height != y.width)
        {
            return Err(ConvError::NonSquareResize {
                x_height: x.height,
                x_width: x.width,
                y_height: y.height,
                y_width: y.width,
            });
        }
        let src = |s: &SpatialShape, i: usize, j: usize| -> (usize, usize) {
            if method == ConvMethod::Pool {
                (0, 0)
            } else {
                (source_index(i, gh, s.height), source_index(j, gw, s.width))
            }
        };
        let mut locations: Vec<Location> = (0..gh * gw)
            .map(|idx| {
                let (i, j) = (idx / gw, idx % gw);
                Location {
                    i,
                    j,
                    x_source: src(&x, i, j),
                    y_source: src(&y, i, j),
                    conjugate: None,
                    representative: true,
                }
            })
            .collect();
        // Conjugate partners: look the negated sources up in a table keyed by the x source
        // (x sources are distinct across locations, the crop is injective).
        let mut by_x = vec![usize::MAX; x.height * x.width];
        for (idx, l) in locations.iter().enumerate() {
            by_x[l.x_source.0 * x.width + l.x_source.1] = idx;
        }
        let neg = |(a, b): (usize, usize), s: &SpatialShape| {
            ((s.height - a) % s.height, (s.width - b) % s.width)
        };
        for idx in 0..locations.len() {
            let l = locations[idx];
            let nx = neg(l.x_source, &x);
            let ny = neg(l.y_source, &y);
            let p = by_x[nx.0 * x.width + nx.1];
            if p != usize::MAX && p != idx && locations[p].y_source == ny {
                locations[idx].conjugate = Some(p);
                locations[idx].representative = idx < p;
            }
        }
        let representatives = (0..locations.len())
            .filter(|&k| locations[k].representative)
            .collect();
        Ok(ConvPlan {
            method,
            x,
            y,
            grid: (gh, gw),
            cropped,
            complex64: method == ConvMethod::Dft && options.mode == Mode::GoogleCompat,
            locations,
            representatives,
        })
    }

    pub fn method(&self) -> ConvMethod {
        self.method
    }

    /// Per-image shape of the x layer.
    pub fn x_shape(&self) -> SpatialShape {
        self.x
    }

    /// Per-image shape of the y layer.
    pub fn y_shape(&self) -> SpatialShape {
        self.y
    }

    /// `(rows, cols)` of the compared frequency grid (`(1, 1)` for pool).
    pub fn grid(&self) -> (usize, usize) {
        self.grid
    }

    /// True when a layer's spectrum is cropped to the smaller grid.
    pub fn cropped(&self) -> bool {
        self.cropped
    }

    /// True when FFT values are rounded to complex64 (google-compat DFT).
    pub fn complex64(&self) -> bool {
        self.complex64
    }

    /// Every location of the grid, row-major.
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// Row-major indices of the locations that are accumulated and computed (ascending).
    pub fn representatives(&self) -> &[usize] {
        &self.representatives
    }

    /// Splits the representatives into at most `blocks` contiguous, nearly equal blocks: the
    /// unit of work the engine spreads across workers.
    pub fn frequency_blocks(&self, blocks: usize) -> Vec<Vec<usize>> {
        let blocks = blocks.clamp(1, self.representatives.len().max(1));
        let n = self.representatives.len();
        (0..blocks)
            .map(|b| self.representatives[b * n / blocks..(b + 1) * n / blocks].to_vec())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// How many grid locations a representative stands for (2 with a conjugate, else 1).
    pub fn multiplicity(&self, index: usize) -> usize {
        if self.locations[index].conjugate.is_some() {
            2
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(x: (usize, usize), y: (usize, usize), mode: Mode) -> Result<ConvPlan, ConvError> {
        let opts = ConvOptions::default().with_mode(mode);
        ConvPlan::new(
            SpatialShape::new(x.0, x.1, 3),
            SpatialShape::new(y.0, y.1, 2),
            &opts,
        )
    }

    #[test]
    fn google_crop_indices() {
        // numpy: fftfreq(8)*8 = [0,1,2,3,-4,-3,-2,-1]; keep -2 <= f < 2 -> indices [0,1,6,7].
        let p = plan((8, 8), (4, 4), Mode::GoogleCompat).unwrap();
        assert_eq!(p.grid(), (4, 4));
        let cols: Vec<usize> = (0..4).map(|j| p.locations()[j].x_source.1).collect();
        assert_eq!(cols, vec![0, 1, 6, 7]);
        let ycols: Vec<usize> = (0..4).map(|j| p.locations()[j].y_source.1).collect();
        assert_eq!(ycols, vec![0, 1, 2, 3]);
        // odd target: -1.5 <= f < 1.5 -> [0, 1, N-1]
        let p = plan((7, 7), (3, 3), Mode::Default).unwrap();
        let cols: Vec<usize> = (0..3).map(|j| p.locations()[j].x_source.1).collect();
        assert_eq!(cols, vec![0, 1, 6]);
    }

    #[test]
    fn representatives_cover_grid() {
        for &(h, w) in &[(1, 1), (2, 2), (3, 5), (4, 4), (6, 7), (8, 8)] {
            let p = plan((h, w), (h, w), Mode::Default).unwrap();
            let total: usize = p.representatives().iter().map(|&r| p.multiplicity(r)).sum();
            assert_eq!(total, h * w, "{h}x{w}");
            // about half
            assert!(p.representatives().len() <= h * w / 2 + 4);
            for l in p.locations() {
                if let Some(c) = l.conjugate {
                    let m = p.locations()[c];
                    assert_eq!(m.conjugate.map(|k| p.locations()[k]), Some(*l));
                    assert_eq!((l.i + m.i) % h, 0);
                    assert_eq!((l.j + m.j) % w, 0);
                }
            }
        }
    }

    #[test]
    fn crop_nyquist_has_no_partner() {
        let p = plan((8, 8), (4, 4), Mode::Default).unwrap();
        // column 2 of the 4-grid is frequency -2 of the 8-layer: unpaired.
        let l = p.locations()[2];
        assert_eq!(l.x_source, (0, 6));
        assert!(l.conjugate.is_none() && l.representative);
        let total: usize = p.representatives().iter().map(|&r| p.multiplicity(r)).sum();
        assert_eq!(total, 16);
    }

    #[test]
    fn real_locations_are_the_self_conjugate_ones() {
        // 8x8 against 8x8: (0,0), (0,4), (4,0), (4,4) are real, every other location complex.
        let p = plan((8, 8), (8, 8), Mode::Default).unwrap();
        let real: Vec<(usize, usize)> = p
            .locations()
            .iter()
            .enumerate()
            .filter(|&(k, _)| p.real_sides(k) == (true, true))
            .map(|(_, l)| (l.i, l.j))
            .collect();
        assert_eq!(real, vec![(0, 0), (0, 4), (4, 0), (4, 4)]);
        for (k, l) in p.locations().iter().enumerate() {
            // A location without a conjugate partner in an uncropped grid is its own partner.
            assert_eq!(p.real_sides(k).0, l.conjugate.is_none(), "{l:?}");
        }
        // Cropped 8 -> 4: column 2 is frequency -2 of the 8-wide layer (complex) but the
        // Nyquist frequency of the 4-wide one (real).
        let p = plan((8, 8), (4, 4), Mode::Default).unwrap();
        assert_eq!(p.real_sides(2), (false, true));
        assert_eq!(p.real_sides(0), (true, true));
        // Odd sizes: only the zero frequency is real.
        assert!(real_at(0, 0, (3, 5), (3, 5)));
        assert!(!real_at(0, 2, (3, 5), (3, 5)) && !real_at(1, 0, (3, 5), (3, 5)));
    }

    #[test]
    fn google_non_square_crop_refused() {
        assert!(matches!(
            plan((8, 6), (4, 4), Mode::GoogleCompat),
            Err(ConvError::NonSquareResize { .. })
        ));
        // no crop needed: fine even if non-square
        assert!(plan((8, 6), (8, 6), Mode::GoogleCompat).is_ok());
        // default mode crops each axis
        let p = plan((8, 6), (4, 9), Mode::Default).unwrap();
        assert_eq!(p.grid(), (4, 6));
        let total: usize = p.representatives().iter().map(|&r| p.multiplicity(r)).sum();
        assert_eq!(total, 24);
    }
}
