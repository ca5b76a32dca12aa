//! Test helpers: a splitmix64 generator, a dev-only `.npy` reader (little-endian `<f8` / `<f4`,
//! C order; the real readers live in svcca-storage) and golden-case loading.
#![allow(dead_code)]

use std::path::PathBuf;

use svcca_core::faer::{self, Accum, Mat};
use svcca_core::{JointMoments, MomentAccumulator, RowBlock};

/// The fixtures folder of the repository.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// splitmix64 as the golden README defines it.
pub struct SplitMix64 {
    seed: u64,
    k: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { seed, k: 0 }
    }
    pub fn next_u64(&mut self) -> u64 {
        self.k += 1;
        let mut z = self
            .seed
            .wrapping_add(self.k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1), exact in f64.
    pub fn uniform_pm1(&mut self) -> f64 {
        2.0 * ((self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0
    }
    /// Uniform in [0, 1).
    pub fn uniform01(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Approximately standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform01().max(1e-300);
        let u2 = self.uniform01();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform01() * n as f64) as usize % n.max(1)
    }
}

/// A `[rows, cols]` matrix filled row-major from the recipe's splitmix64 stream.
pub fn recipe_matrix(seed: u64, rows: usize, cols: usize) -> Mat<f64> {
    let mut g = SplitMix64::new(seed);
    let mut m = Mat::zeros(rows, cols);
    for i in 0..rows {
        for j in 0..cols {
            m[(i, j)] = g.uniform_pm1();
        }
    }
    m
}

pub fn matmul(a: &Mat<f64>, b: &Mat<f64>) -> Mat<f64> {
    let mut c = Mat::zeros(a.nrows(), b.ncols());
    faer::linalg::matmul::matmul(c.as_mut(), Accum::Replace, a, b, 1.0, faer::Par::Seq);
    c
}

/// A parsed `.npy` array (float data widened to f64, shape, whether it was f32).
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
    pub is_f32: bool,
    pub raw_f32: Vec<f32>,
}

/// Minimal `.npy` reader for the fixtures: version 1/2 headers, `<f8` or `<f4`, C order.
pub fn read_npy(path: &std::path::Path) -> Npy {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not npy", path.display());
    let major = bytes[6];
    let (hlen, start) = if major == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let is_f32 = header.contains("'<f4'");
    assert!(is_f32 || header.contains("'<f8'"), "{header}");
    let sh = header.split("'shape': (").nth(1).unwrap();
    let sh = &sh[..sh.find(')').unwrap()];
    let shape: Vec<usize> = sh
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let body = &bytes[start + hlen..];
    let count: usize = shape.iter().product();
    let (data, raw_f32) = if is_f32 {
        let v: Vec<f32> = body[..count * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (v.iter().map(|&x| x as f64).collect(), v)
    } else {
        (
            body[..count * 8]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Vec::new(),
        )
    };
    Npy {
        shape,
        data,
        is_f32,
        raw_f32,
    }
}

/// A representation as row-major `[datapoints, neurons]` f64.
#[derive(Clone)]
pub struct Rows {
    pub n: usize,
    pub d: usize,
    pub data: Vec<f64>,
}

impl Rows {
    /// From google's `[neurons, datapoints]` matrix.
    pub fn from_neurons_first(m: &Mat<f64>) -> Rows {
        let (d, n) = (m.nrows(), m.ncols());
        let mut data = vec![0.0; n * d];
        for i in 0..d {
            for r in 0..n {
                data[r * d + i] = m[(i, r)];
            }
        }
        Rows { n, d, data }
    }
    /// From a `[neurons, datapoints]` C-order buffer.
    pub fn from_neurons_first_slice(v: &[f64], d: usize, n: usize) -> Rows {
        let mut data = vec![0.0; n * d];
        for i in 0..d {
            for r in 0..n {
                data[r * d + i] = v[i * n + r];
            }
        }
        Rows { n, d, data }
    }
    pub fn block(&self) -> RowBlock<'_> {
        RowBlock::f64(&self.data, self.n, self.d).unwrap()
    }
    pub fn rows(&self, r0: usize, r1: usize) -> RowBlock<'_> {
        RowBlock::f64(&self.data[r0 * self.d..r1 * self.d], r1 - r0, self.d).unwrap()
    }
    pub fn get(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.d + c]
    }
    pub fn to_mat(&self) -> Mat<f64> {
        Mat::from_fn(self.n, self.d, |r, c| self.get(r, c))
    }
    pub fn from_mat(m: &Mat<f64>) -> Rows {
        let (n, d) = (m.nrows(), m.ncols());
        let mut data = Vec::with_capacity(n * d);
        for r in 0..n {
            for c in 0..d {
                data.push(m[(r, c)]);
            }
        }
        Rows { n, d, data }
    }
}

pub fn moments(x: &Rows) -> MomentAccumulator {
    let mut m = MomentAccumulator::new(x.d);
    m.push(x.block()).unwrap();
    m
}

pub fn joint(x: &Rows, y: &Rows) -> JointMoments {
    let mut j = JointMoments::new(x.d, y.d);
    j.push(x.block(), y.block()).unwrap();
    j
}

/// Random `[n, d]` data with a random mixing so neurons are correlated.
pub fn random_rows(g: &mut SplitMix64, n: usize, d: usize) -> Rows {
    let base = Mat::from_fn(n, d, |_, _| g.normal());
    let mix = Mat::from_fn(d, d, |i, j| if i == j { 1.0 } else { 0.3 * g.normal() });
    Rows::from_mat(&matmul(&base, &mix))
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}
