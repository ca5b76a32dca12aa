//! Per-image 2-D DFT over `(h, w)` of every channel, planned once and reused.
//!
//! Real channels are packed two at a time into one complex image `Z = X_a + i·X_b`, so a layer
//! of `c` channels costs `⌈c/2⌉` complex 2-D FFTs (rows, then columns after a transpose). The
//! two real spectra are separated at the frequencies that are asked for, using the conjugate
//! symmetry of real spectra:
//!
//! ```text
//! X_a(f) = (Z(f) + conj Z(−f)) / 2,      X_b(f) = (Z(f) − conj Z(−f)) / (2i)
//! ```
//!
//! With `complex64` set, the input is rounded to f32 and every extracted value to complex64,
//! emulating google's `images.astype("complex64")` followed by a single-precision FFT.

use std::sync::Arc;

use faer::c64;
use rustfft::{Fft, FftPlanner};

use super::input::{ConvData, Layout, SpatialShape};

pub(crate) struct Spectrum {
    shape: SpatialShape,
    layout: Layout,
    complex64: bool,
    pairs: usize,
    row_fft: Arc<dyn Fft<f64>>,
    col_fft: Arc<dyn Fft<f64>>,
    /// `[pair][row][col]` before the column pass.
    rows: Vec<c64>,
    /// `[pair][col][row]`: the 2-D spectrum, transposed.
    spec: Vec<c64>,
    scratch: Vec<c64>,
}

impl Spectrum {
    pub(crate) fn new(shape: SpatialShape, layout: Layout, complex64: bool) -> Self {
        let mut planner = FftPlanner::<f64>::new();
        let row_fft = planner.plan_fft_forward(shape.width);
        let col_fft = planner.plan_fft_forward(shape.height);
        let pairs = shape.channels.div_ceil(2);
        let hw = shape.height * shape.width;
        let scratch_len = row_fft
            .get_inplace_scratch_len()
            .max(col_fft.get_inplace_scratch_len());
        Spectrum {
            shape,
            layout,
            complex64,
            pairs,
            row_fft,
            col_fft,
            rows: vec![c64::new(0.0, 0.0); pairs * hw],
            spec: vec![c64::new(0.0, 0.0); pairs * hw],
            scratch: vec![c64::new(0.0, 0.0); scratch_len],
        }
    }

    /// Loads image `image` of `data` (a block in this spectrum's layout) and transforms it.
    /// Returns the first non-finite value met, if any (the spectrum is then meaningless).
    pub(crate) fn transform(&mut self, data: ConvData<'_>, image: usize) -> Option<f64> {
        let per = self.shape.len();
        let bad = match data {
            ConvData::F32(d) => self.load(&d[image * per..(image + 1) * per]),
            ConvData::F64(d) => self.load(&d[image * per..(image + 1) * per]),
        };
        if bad.is_some() {
            return bad;
        }
        let (h, w) = (self.shape.height, self.shape.width);
        let hw = h * w;
        self.row_fft
            .process_with_scratch(&mut self.rows, &mut self.scratch);
        for p in 0..self.pairs {
            let src = &self.rows[p * hw..(p + 1) * hw];
            let dst = &mut self.spec[p * hw..(p + 1) * hw];
            for r in 0..h {
                for c in 0..w {
                    dst[c * h + r] = src[r * w + c];
                }
            }
        }
        self.col_fft
            .process_with_scratch(&mut self.spec, &mut self.scratch);
        None
    }

    fn load<T: Copy + Into<f64>>(&mut self, img: &[T]) -> Option<f64> {
        let SpatialShape {
            height: h,
            width: w,
            channels: c,
        } = self.shape;
        let hw = h * w;
        let round = self.complex64;
        let mut bad = None;
        let mut get = |v: T| -> f64 {
            let v: f64 = v.into();
            if !v.is_finite() {
                bad = Some(v);
            }
            if round { v as f32 as f64 } else { v }
        };
        match self.layout {
            Layout::Nhwc => {
                for pos in 0..hw {
                    let px = &img[pos * c..(pos + 1) * c];
                    for p in 0..self.pairs {
                        let re = get(px[2 * p]);
                        let im = if 2 * p + 1 < c {
                            get(px[2 * p + 1])
                        } else {
                            0.0
                        };
                        self.rows[p * hw + pos] = c64::new(re, im);
                    }
                }
            }
            Layout::Nchw => {
                for p in 0..self.pairs {
                    let a = &img[2 * p * hw..(2 * p + 1) * hw];
                    let dst = &mut self.rows[p * hw..(p + 1) * hw];
                    if 2 * p + 1 < c {
                        let b = &img[(2 * p + 1) * hw..(2 * p + 2) * hw];
                        for pos in 0..hw {
                            dst[pos] = c64::new(get(a[pos]), get(b[pos]));
                        }
                    } else {
                        for pos in 0..hw {
                            dst[pos] = c64::new(get(a[pos]), 0.0);
                        }
                    }
                }
            }
        }
        bad
    }

    /// Writes channel values of frequency `(a, b)` (row, col of this layer's spectrum) of the
    /// last transformed image into `out[ch * stride]`, for every channel.
    #[inline]
    pub(crate) fn extract(&self, (a, b): (usize, usize), out: &mut [c64], stride: usize) {
        let (h, w) = (self.shape.height, self.shape.width);
        let hw = h * w;
        let at = b * h + a;
        let neg = ((w - b) % w) * h + (h - a) % h;
        let c = self.shape.channels;
        let round = |z: c64| {
            if self.complex64 {
                c64::new(z.re as f32 as f64, z.im as f32 as f64)
            } else {
                z
            }
        };
        for p in 0..self.pairs {
            let z = self.spec[p * hw + at];
            let zc = self.spec[p * hw + neg].conj();
            out[2 * p * stride] = round((z + zc) * 0.5);
            if 2 * p + 1 < c {
                // (z − zc) / (2i) = −i (z − zc) / 2
                let d = z - zc;
                out[(2 * p + 1) * stride] = round(c64::new(d.im * 0.5, -d.re * 0.5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct O(h²w²) DFT of one channel.
    fn naive(img: &[f64], h: usize, w: usize, c: usize, ch: usize, a: usize, b: usize) -> c64 {
        let mut s = c64::new(0.0, 0.0);
        for r in 0..h {
            for q in 0..w {
                let ang = -2.0
                    * std::f64::consts::PI
                    * ((a * r) as f64 / h as f64 + (b * q) as f64 / w as f64);
                s += c64::new(ang.cos(), ang.sin()) * img[(r * w + q) * c + ch];
            }
        }
        s
    }

    #[test]
    fn matches_naive_dft_both_layouts() {
        let (h, w, c) = (5, 6, 3);
        let nhwc: Vec<f64> = (0..h * w * c)
            .map(|k| ((k * 37 % 101) as f64 / 50.0) - 1.0)
            .collect();
        let mut nchw = vec![0.0; nhwc.len()];
        for r in 0..h {
            for q in 0..w {
                for ch in 0..c {
                    nchw[ch * h * w + r * w + q] = nhwc[(r * w + q) * c + ch];
                }
            }
        }
        for (layout, data) in [(Layout::Nhwc, &nhwc), (Layout::Nchw, &nchw)] {
            let mut s = Spectrum::new(SpatialShape::new(h, w, c), layout, false);
            assert!(s.transform(ConvData::F64(data), 0).is_none());
            let mut out = vec![c64::new(0.0, 0.0); c];
            for a in 0..h {
                for b in 0..w {
                    s.extract((a, b), &mut out, 1);
                    for (ch, got) in out.iter().enumerate() {
                        let want = naive(&nhwc, h, w, c, ch, a, b);
                        assert!((got - want).norm() < 1e-12, "{layout:?} {a} {b} {ch}");
                    }
                }
            }
        }
    }

    #[test]
    fn reports_non_finite() {
        let mut data = vec![0.5f32; 2 * 2 * 2];
        data[3] = f32::NAN;
        let mut s = Spectrum::new(SpatialShape::new(2, 2, 2), Layout::Nhwc, false);
        assert!(s.transform(ConvData::F32(&data), 0).unwrap().is_nan());
    }
}
