//! The `.npy` reader against real fixtures, hand-built files of every version, and bad input.

use std::path::{Path, PathBuf};

use svcca_storage::npy::{self, Dtype, NpyError, NpyFile};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Builds a .npy file by hand with the given version, descr, order and shape text.
fn raw_npy(version: u8, descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let header = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}\n",
        if fortran { "True" } else { "False" }
    );
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn reads_real_dense_fixture_in_blocks_equal_to_whole() {
    let path = fixtures().join("digits/mlp/seed0/step2250/h1.npy");
    let whole = npy::read_f64(&path).unwrap();
    assert_eq!(whole.shape, vec![597, 128]);
    assert_eq!(whole.data.len(), 597 * 128);
    // Post-ReLU activations: non-negative and not all zero.
    assert!(whole.data.iter().all(|&v| v >= 0.0));
    assert!(whole.data.iter().any(|&v| v > 0.0));

    let file = NpyFile::open(&path).unwrap();
    assert_eq!(file.dtype(), Dtype::F32);
    file.expect_rank(&[2]).unwrap();
    let mut blocks = file.blocks_f32(100);
    let mut seen = Vec::new();
    let mut starts = Vec::new();
    while let Some(b) = blocks.next_block().unwrap() {
        assert_eq!(b.data.len(), b.rows * 128);
        starts.push(b.first_row);
        seen.extend_from_slice(b.data);
    }
    assert_eq!(starts, vec![0, 100, 200, 300, 400, 500]);
    assert_eq!(seen.len(), whole.data.len());
    assert!(seen.iter().zip(&whole.data).all(|(&a, &b)| a as f64 == b));
}

#[test]
fn reads_conv_fixture_as_images_by_flat_rows() {
    let path = fixtures().join("digits/conv/seed0/step1500/conv1.npy");
    let file = NpyFile::open(&path).unwrap();
    assert_eq!(file.shape(), &[597, 8, 8, 16]);
    assert_eq!(file.rows(), 597);
    assert_eq!(file.row_len(), 8 * 8 * 16);
    assert!(matches!(
        file.expect_rank(&[2]),
        Err(NpyError::WrongRank { rank: 4, .. })
    ));
    let mut blocks = file.blocks_f64(7);
    let b = blocks.next_block().unwrap().unwrap();
    assert_eq!((b.rows, b.row_len), (7, 1024));
}

#[test]
fn all_versions_and_both_dtypes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let vals: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    for version in [1u8, 2, 3] {
        let p = write(
            dir.path(),
            &format!("v{version}.npy"),
            &raw_npy(version, "<f4", false, "(3, 4)", &f32_bytes(&vals)),
        );
        let a = npy::read_f32(&p).unwrap();
        assert_eq!(a.shape, vec![3, 4]);
        assert_eq!(a.data, vals);
        assert_eq!(NpyFile::open(&p).unwrap().header().version, version);
    }
    let f64s: Vec<f64> = (0..6).map(|i| (i as f64).sqrt()).collect();
    let p = dir.path().join("w.npy");
    npy::write_npy(&p, &[6], &f64s).unwrap();
    let a = npy::read_f64(&p).unwrap();
    assert_eq!(a.data, f64s);
    assert_eq!(a.row_len(), 1);
}

/// A [n, h, w, c] array with a distinct value everywhere, row-major (C order).
fn grid(shape: &[usize]) -> Vec<f32> {
    let len: usize = shape.iter().product();
    (0..len).map(|i| i as f32 * 0.25 - 3.0).collect()
}

/// The same values laid out column-major (first axis fastest), as NumPy writes `order='F'`.
fn to_fortran(shape: &[usize], c: &[f32]) -> Vec<f32> {
    let mut f = vec![0f32; c.len()];
    let mut index = vec![0usize; shape.len()];
    for v in c {
        let (mut k, mut stride) = (0, 1);
        for (i, d) in index.iter().zip(shape) {
            k += i * stride;
            stride *= d;
        }
        f[k] = *v;
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    f
}

#[test]
fn float16_big_endian_and_fortran_order_read_as_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let shape = [5usize, 2, 3, 4];
    let c = grid(&shape);
    let shape_text = "(5, 2, 3, 4)";
    // Every value is a multiple of 0.25 below 2048: exact in float16.
    let f16_le: Vec<u8> = c
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let f16_be: Vec<u8> = c
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_be_bytes())
        .collect();
    let f32_be: Vec<u8> = c.iter().flat_map(|v| v.to_be_bytes()).collect();
    let f64_be: Vec<u8> = c.iter().flat_map(|v| (*v as f64).to_be_bytes()).collect();
    let fortran = to_fortran(&shape, &c);
    let f32_f: Vec<u8> = f32_bytes(&fortran);
    let f16_be_f: Vec<u8> = fortran
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_be_bytes())
        .collect();
    let cases = [
        ("f16.npy", "<f2", false, f16_le, Dtype::F16),
        ("f16be.npy", ">f2", false, f16_be, Dtype::F16),
        ("f32be.npy", ">f4", false, f32_be, Dtype::F32),
        ("f64be.npy", ">f8", false, f64_be, Dtype::F64),
        ("fortran.npy", "<f4", true, f32_f, Dtype::F32),
        ("fortran16be.npy", ">f2", true, f16_be_f, Dtype::F16),
    ];
    for (name, descr, fortran, bytes, dtype) in cases {
        let p = write(
            dir.path(),
            name,
            &raw_npy(1, descr, fortran, shape_text, &bytes),
        );
        let file = NpyFile::open(&p).unwrap();
        assert_eq!(file.dtype(), dtype, "{name}");
        assert_eq!(file.header().fortran_order, fortran, "{name}");
        assert_eq!(npy::read_f32(&p).unwrap().data, c, "{name}: whole");
        // Blocks of 2 rows (the last one short) give the same rows.
        let mut blocks = NpyFile::open(&p).unwrap().blocks_f64(2);
        let mut got = Vec::new();
        while let Some(b) = blocks.next_block().unwrap() {
            assert_eq!(b.data.len(), b.rows * 24, "{name}");
            got.extend(b.data.iter().map(|v| *v as f32));
        }
        assert_eq!(got, c, "{name}: blocks");
        // Rewound mid-file (after one block), the file reads again from its first row.
        blocks.rewind().unwrap();
        blocks.next_block().unwrap();
        blocks.rewind().unwrap();
        let mut again = Vec::new();
        while let Some(b) = blocks.next_block().unwrap() {
            assert_eq!(again.len(), b.first_row * 24, "{name}");
            again.extend(b.data.iter().map(|v| *v as f32));
        }
        assert_eq!(again, c, "{name}: blocks after rewind");
    }
    // A Fortran flag on a vector-like array is C order.
    let p = write(
        dir.path(),
        "v.npy",
        &raw_npy(1, "<f4", true, "(4, 1)", &f32_bytes(&[1., 2., 3., 4.])),
    );
    assert_eq!(npy::read_f32(&p).unwrap().data, vec![1., 2., 3., 4.]);
    // Inside an archive a Fortran matrix cannot be read by positioned reads: refused by name.
    let raw = raw_npy(1, "<f4", true, "(2, 2)", &f32_bytes(&[1., 2., 3., 4.]));
    let len = raw.len() as u64;
    let e = npy::NpyReader::from_reader(std::io::Cursor::new(raw), "a.npz:m", Some(len))
        .err()
        .unwrap();
    assert!(matches!(e, NpyError::FortranOrder { .. }), "{e}");
    assert!(e.to_string().contains("a.npz:m") && e.to_string().contains("Fortran"));
}

#[test]
fn unsupported_dtypes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for descr in ["<i8", "<c16", "<f16", "|b1"] {
        let p = write(
            dir.path(),
            "d.npy",
            &raw_npy(1, descr, false, "(2,)", &[0u8; 16]),
        );
        let e = NpyFile::open(&p).err().unwrap();
        match &e {
            NpyError::UnsupportedDtype { dtype, path } => {
                assert_eq!(dtype, descr);
                assert_eq!(path, &p);
            }
            other => panic!("{descr}: {other}"),
        }
        assert!(e.to_string().contains(descr));
    }
    // The real integer labels fixture.
    let e = NpyFile::open(fixtures().join("digits/probe_y.npy"))
        .err()
        .unwrap();
    assert!(
        matches!(e, NpyError::UnsupportedDtype { ref dtype, .. } if dtype == "<i8"),
        "{e}"
    );
}

#[test]
fn structured_dtype_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let header = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let p = write(dir.path(), "s.npy", &bytes);
    assert!(matches!(
        NpyFile::open(&p),
        Err(NpyError::UnsupportedDtype { .. })
    ));
}

#[test]
fn truncated_and_overlong_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "t.npy",
        &raw_npy(1, "<f4", false, "(3, 4)", &f32_bytes(&[1.0; 11])),
    );
    let e = NpyFile::open(&p).err().unwrap();
    assert!(
        matches!(
            e,
            NpyError::Truncated {
                expected: 48,
                actual: 44,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("t.npy"));
    let p = write(
        dir.path(),
        "l.npy",
        &raw_npy(1, "<f4", false, "(3, 4)", &f32_bytes(&[1.0; 13])),
    );
    assert!(matches!(
        NpyFile::open(&p),
        Err(NpyError::TrailingData { extra: 4, .. })
    ));

    // A real fixture cut in half.
    let real = std::fs::read(fixtures().join("digits/mlp/seed0/step0/h4.npy")).unwrap();
    let p = write(dir.path(), "half.npy", &real[..real.len() / 2]);
    assert!(matches!(npy::read_f64(&p), Err(NpyError::Truncated { .. })));
}

#[test]
fn corrupt_headers_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("magic", b"NOTNUMPY\x00\x00garbage".to_vec()),
        ("short", b"\x93NUM".to_vec()),
        ("version", b"\x93NUMPY\x09\x00\x10\x00".to_vec()),
        ("dict", raw_npy(1, "<f4", false, "(2,", &[0; 8])),
        ("headerlen", {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&500u16.to_le_bytes());
            b.extend_from_slice(b"{'descr': '<f4'}");
            b
        }),
    ];
    for (name, bytes) in cases {
        let p = write(dir.path(), &format!("{name}.npy"), &bytes);
        let e = NpyFile::open(&p).err().unwrap();
        assert!(matches!(e, NpyError::CorruptHeader { .. }), "{name}: {e}");
        assert!(e.to_string().contains(&format!("{name}.npy")));
    }
}

#[test]
fn empty_and_scalar_arrays_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "e.npy",
        &raw_npy(1, "<f4", false, "(0, 5)", &[]),
    );
    assert!(matches!(NpyFile::open(&p), Err(NpyError::Empty { .. })));
    let p = write(
        dir.path(),
        "e2.npy",
        &raw_npy(1, "<f4", false, "(5, 0)", &[]),
    );
    assert!(matches!(NpyFile::open(&p), Err(NpyError::Empty { .. })));
    let p = write(
        dir.path(),
        "s.npy",
        &raw_npy(1, "<f4", false, "()", &f32_bytes(&[1.0])),
    );
    assert!(matches!(
        NpyFile::open(&p),
        Err(NpyError::WrongRank { rank: 0, .. })
    ));
}

#[test]
fn non_finite_values_report_first_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vec![1.0f32; 12];
    v[7] = f32::NAN;
    v[9] = f32::INFINITY;
    let p = dir.path().join("n.npy");
    npy::write_npy(&p, &[3, 4], &v).unwrap();
    let e = npy::read_f64(&p).err().unwrap();
    assert!(
        matches!(e, NpyError::NonFinite { row: 1, col: 3, .. }),
        "{e}"
    );
    // Blocks of one row: the error comes in the second block with the absolute row.
    let mut blocks = NpyFile::open(&p).unwrap().blocks_f32(1);
    assert!(blocks.next_block().unwrap().is_some());
    assert!(matches!(
        blocks.next_block(),
        Err(NpyError::NonFinite { row: 1, col: 3, .. })
    ));
    // Opting out yields the raw values.
    let mut blocks = NpyFile::open(&p).unwrap().blocks_f32(3).check_finite(false);
    let b = blocks.next_block().unwrap().unwrap();
    assert!(b.data[7].is_nan() && b.data[9].is_infinite());
}

#[test]
fn missing_file_is_io_error_naming_path() {
    let e = NpyFile::open("/nonexistent/dir/x.npy").err().unwrap();
    assert!(matches!(e, NpyError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/dir/x.npy"));
}
