//! Mutations: byte-level ones for every format, token-level ones for the text formats.
//!
//! One call applies one to four mutations picked at random. Byte-level: bit flips, a byte set
//! to 0/0xff/0x7f/0x80, "interesting" 16/32/64-bit integers (both byte orders) written at a
//! random offset, or over what looks like a length field (the first 16 bytes, or just before
//! a run of text), insert/delete/duplicate a range, splice with another corpus entry,
//! truncation. Token-level (text formats): replace a number with a huge, negative, NaN or
//! fractional one, duplicate a line (so a key appears twice), drop a line, swap a token for
//! another from a dictionary of the format's keywords.

use crate::rng::Rng;

/// Largest input a mutation may produce: big enough for any seed plus growth, small enough
/// that one execution stays fast.
pub const MAX_INPUT: usize = 1 << 20;

const INTERESTING_8: [u8; 9] = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40, 0xfe];
const INTERESTING_16: [u16; 8] = [0, 1, 0x7fff, 0x8000, 0xffff, 0x100, 0x1000, 0xfffe];
const INTERESTING_32: [u32; 10] = [
    0,
    1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000,
    0x0100_0000,
    0x4000_0000,
    0xffff_fffe,
    0x6400_0000,
];
const INTERESTING_64: [u64; 8] = [
    0,
    1,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    1 << 32,
    1 << 40,
    1 << 62,
];

const NUMBERS: [&str; 16] = [
    "0",
    "-1",
    "1",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "1e308",
    "1e999",
    "-0",
    "NaN",
    "nan",
    "inf",
    "0.5",
    "99999999999999999999999999",
];

/// How an input is best mutated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Binary,
    /// Text with a dictionary of the format's tokens (keys, keywords, separators).
    Text(&'static [&'static str]),
}

/// Mutates `data` in place; `other` is another corpus entry for splicing.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], format: Format) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let text_ops = match format {
            Format::Text(_) => 5,
            Format::Binary => 0,
        };
        let op = rng.below(12 + text_ops);
        match op {
            0 => bit_flip(rng, data),
            1 => set_byte(rng, data),
            2 | 3 => set_int(rng, data),
            4 => insert_range(rng, data),
            5 => delete_range(rng, data),
            6 => duplicate_range(rng, data),
            7 => splice(rng, data, other),
            8 => truncate(rng, data),
            9 => random_bytes(rng, data),
            10 => set_length_field(rng, data),
            11 => copy_within(rng, data),
            12 => replace_number(rng, data),
            13 => duplicate_line(rng, data),
            14 => drop_line(rng, data),
            15 | 16 => {
                if let Format::Text(dict) = format {
                    insert_token(rng, data, dict)
                }
            }
            _ => unreachable!(),
        }
    }
    data.truncate(MAX_INPUT);
}

fn bit_flip(rng: &mut Rng, data: &mut [u8]) {
    if data.is_empty() {
        return;
    }
    let i = rng.below(data.len());
    data[i] ^= 1 << rng.below(8);
}

fn set_byte(rng: &mut Rng, data: &mut [u8]) {
    if data.is_empty() {
        return;
    }
    let i = rng.below(data.len());
    data[i] = *rng.pick(&INTERESTING_8);
}

fn write_int(rng: &mut Rng, data: &mut [u8], at: usize) {
    let big_endian = rng.one_in(4);
    let bytes: Vec<u8> = match rng.below(3) {
        0 => {
            let v = *rng.pick(&INTERESTING_16);
            if big_endian {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        }
        1 => {
            let v = *rng.pick(&INTERESTING_32);
            if big_endian {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        }
        _ => {
            let v = *rng.pick(&INTERESTING_64);
            if big_endian {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        }
    };
    for (k, b) in bytes.into_iter().enumerate() {
        if let Some(slot) = data.get_mut(at + k) {
            *slot = b;
        }
    }
}

fn set_int(rng: &mut Rng, data: &mut [u8]) {
    if data.is_empty() {
        return;
    }
    let at = rng.below(data.len());
    write_int(rng, data, at);
}

/// Headers keep their length fields near the start (`.npy`, `.safetensors`, Arrow's
/// continuation markers) or just before a run of text (`.npy` and zip name lengths).
fn set_length_field(rng: &mut Rng, data: &mut [u8]) {
    if data.is_empty() {
        return;
    }
    let at = if rng.one_in(2) {
        rng.below(data.len().min(16))
    } else {
        let start = rng.below(data.len());
        match data[start..].iter().position(|b| b.is_ascii_alphabetic()) {
            Some(p) => (start + p).saturating_sub(1 + rng.below(8)),
            None => start,
        }
    };
    write_int(rng, data, at);
}

fn range(rng: &mut Rng, len: usize) -> (usize, usize) {
    let start = rng.below(len);
    let cap = if rng.one_in(8) { len } else { 64 };
    let max = (len - start).min(cap);
    let n = 1 + rng.below(max.max(1));
    (start, n.min(len - start))
}

fn insert_range(rng: &mut Rng, data: &mut Vec<u8>) {
    let at = rng.below(data.len() + 1);
    let max = if rng.one_in(8) { 4096 } else { 32 };
    let n = 1 + rng.below(max);
    let fill = if rng.one_in(2) {
        *rng.pick(&INTERESTING_8)
    } else {
        rng.next_u64() as u8
    };
    data.splice(at..at, std::iter::repeat_n(fill, n));
}

fn delete_range(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let (start, n) = range(rng, data.len());
    data.drain(start..start + n);
}

fn duplicate_range(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let (start, n) = range(rng, data.len());
    let chunk = data[start..start + n].to_vec();
    let at = rng.below(data.len() + 1);
    data.splice(at..at, chunk);
}

fn copy_within(rng: &mut Rng, data: &mut [u8]) {
    if data.len() < 2 {
        return;
    }
    let (start, n) = range(rng, data.len());
    let to = rng.below(data.len() - n + 1);
    data.copy_within(start..start + n, to);
}

fn splice(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    if other.is_empty() {
        return;
    }
    let cut = rng.below(data.len() + 1);
    let from = rng.below(other.len());
    data.truncate(cut);
    data.extend_from_slice(&other[from..]);
}

fn truncate(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let keep = rng.below(data.len());
    data.truncate(keep);
}

fn random_bytes(rng: &mut Rng, data: &mut [u8]) {
    if data.is_empty() {
        return;
    }
    let (start, n) = range(rng, data.len());
    for b in &mut data[start..start + n] {
        *b = rng.next_u64() as u8;
    }
}

/// Byte ranges of the decimal numbers (digits with an optional leading '-') in `data`.
fn numbers(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if data[i].is_ascii_digit() {
            let start = if i > 0 && data[i - 1] == b'-' {
                i - 1
            } else {
                i
            };
            let mut end = i;
            while end < data.len() && (data[end].is_ascii_digit() || data[end] == b'.') {
                end += 1;
            }
            out.push((start, end));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn replace_number(rng: &mut Rng, data: &mut Vec<u8>) {
    let found = numbers(data);
    if found.is_empty() {
        return;
    }
    let (start, end) = *rng.pick(&found);
    let with = rng.pick(&NUMBERS).as_bytes().to_vec();
    data.splice(start..end, with);
}

fn lines(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' || b == b',' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < data.len() {
        out.push((start, data.len()));
    }
    out
}

/// Duplicates a line (or a comma-separated item in one-line formats), which repeats a key.
fn duplicate_line(rng: &mut Rng, data: &mut Vec<u8>) {
    let found = lines(data);
    if found.is_empty() {
        return;
    }
    let (start, end) = *rng.pick(&found);
    let chunk = data[start..end].to_vec();
    data.splice(end..end, chunk);
}

fn drop_line(rng: &mut Rng, data: &mut Vec<u8>) {
    let found = lines(data);
    if found.is_empty() {
        return;
    }
    let (start, end) = *rng.pick(&found);
    data.drain(start..end);
}

fn insert_token(rng: &mut Rng, data: &mut Vec<u8>, dict: &[&str]) {
    if dict.is_empty() {
        return;
    }
    let token = rng.pick(dict).as_bytes().to_vec();
    let at = rng.below(data.len() + 1);
    if rng.one_in(2) && !data.is_empty() {
        // Replace a word-like run at `at` rather than insert.
        let start = at.min(data.len() - 1);
        let end = data[start..]
            .iter()
            .position(|b| !b.is_ascii_alphanumeric() && *b != b'_')
            .map_or(data.len(), |p| start + p.max(1));
        data.splice(start..end, token);
    } else {
        data.splice(at..at, token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_change_inputs_and_respect_the_size_cap() {
        let mut rng = Rng::new(1);
        let seed = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }".to_vec();
        let mut changed = 0;
        for _ in 0..500 {
            let mut d = seed.clone();
            mutate(&mut rng, &mut d, b"other", Format::Text(&["shape", "True"]));
            assert!(d.len() <= MAX_INPUT);
            changed += usize::from(d != seed);
        }
        // Some mutations can be no-ops (a truncation to the full length cannot happen, but a
        // bit flipped twice can); nearly all must change something.
        assert!(
            changed > 450,
            "only {changed} of 500 mutations changed the input"
        );
    }

    #[test]
    fn numbers_are_found_with_their_sign() {
        assert_eq!(numbers(b"a=-12, b=3.5"), vec![(2, 5), (9, 12)]);
    }
}
