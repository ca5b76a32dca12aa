//! What the product benchmarks among these examples share: their arguments and their data.

/// The numbers given on the command line, in order.
pub fn number_args() -> Vec<usize> {
    std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect()
}

/// `len` values in `[0, 1)` on a 2⁻²⁴ grid (so exact in f32 as in f64), from a fixed linear
/// congruential sequence: every run and every example multiplies the same numbers.
pub fn uniform(len: usize) -> impl Iterator<Item = f64> {
    let mut s = 1u64;
    (0..len).map(move |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f64 / 16777216.0
    })
}
