//! Test-only helpers for the conv tests: a tiny `.npy` reader and deterministic data.
#![allow(dead_code)]

use std::path::PathBuf;

/// An array read from a `.npy` file (C order, little-endian f4 or f8).
pub enum Npy {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    F64 { shape: Vec<usize>, data: Vec<f64> },
}

impl Npy {
    pub fn shape(&self) -> &[usize] {
        match self {
            Npy::F32 { shape, .. } | Npy::F64 { shape, .. } => shape,
        }
    }
}

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel)
}

/// Reads a version 1/2/3 `.npy` holding `<f4` or `<f8` in C order.
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
    assert!(
        header.contains("'fortran_order': False"),
        "{}: Fortran order unsupported",
        path.display()
    );
    let descr = header.split("'descr':").nth(1).unwrap();
    let descr = descr.split('\'').nth(1).unwrap();
    let shape_s = header.split("'shape':").nth(1).unwrap();
    let shape_s = &shape_s[shape_s.find('(').unwrap() + 1..shape_s.find(')').unwrap()];
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    let body = &bytes[start + hlen..];
    let count: usize = shape.iter().product();
    match descr {
        "<f8" => {
            let data = body[..count * 8]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            Npy::F64 { shape, data }
        }
        "<f4" => {
            let data = body[..count * 4]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            Npy::F32 { shape, data }
        }
        other => panic!("{}: dtype {other} unsupported", path.display()),
    }
}

pub fn read_f64(path: &std::path::Path) -> (Vec<usize>, Vec<f64>) {
    match read_npy(path) {
        Npy::F64 { shape, data } => (shape, data),
        Npy::F32 { shape, data } => (shape, data.into_iter().map(f64::from).collect()),
    }
}

pub fn read_f32(path: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    match read_npy(path) {
        Npy::F32 { shape, data } => (shape, data),
        Npy::F64 { .. } => panic!("{}: expected f32", path.display()),
    }
}

/// splitmix64 stream mapped to uniform [-1, 1), as in the golden README.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f64 {
        2.0 * ((self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }
}
