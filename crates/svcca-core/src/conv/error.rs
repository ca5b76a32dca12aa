//! Typed errors of the convolutional-layer comparisons.

/// Which of the two compared layers an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first layer (`x`).
    X,
    /// The second layer (`y`).
    Y,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::X => "x",
            Side::Y => "y",
        })
    }
}

/// Errors of [`crate::conv`]. Every one is a property of the input or the options: none is
/// retryable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvError {
    /// The activations are not a 4-D array.
    #[error(
        "conv activations must be 4-D ([images, h, w, channels], or [images, channels, h, w] \
         with the NCHW layout); got shape {shape:?}. Dense layers are compared without --conv"
    )]
    NotFourD { shape: Vec<usize> },

    /// A buffer whose length does not match its 4-D shape.
    #[error("shape {shape:?} needs {expected} values but the buffer holds {len}")]
    BufferLength {
        shape: Vec<usize>,
        expected: usize,
        len: usize,
    },

    /// A zero-sized spatial or channel dimension.
    #[error("{side}: empty dimension in spatial shape {height}x{width}x{channels}")]
    EmptyDimension {
        side: Side,
        height: usize,
        width: usize,
        channels: usize,
    },

    /// The two layers were not computed on the same images.
    #[error(
        "x has {x} images but y has {y}: both layers must hold activations of the same images \
         in the same order"
    )]
    ImageCountMismatch { x: u64, y: u64 },

    /// A block whose per-image shape differs from the one the plan was made for.
    #[error(
        "{side}: block has per-image shape {found:?} (h, w, c) but the comparison was planned \
         for {expected:?}"
    )]
    ShapeChanged {
        side: Side,
        expected: [usize; 3],
        found: [usize; 3],
    },

    /// NaN or infinite activations.
    #[error(
        "{side}: non-finite value {value} in image {image} (counted from the start of the \
         stream); NaN or infinite activations cannot be compared, check the layer for overflow"
    )]
    NonFinite { side: Side, image: u64, value: f64 },

    /// Fewer than two images: no covariance exists.
    #[error("{images} image(s): at least 2 are needed to estimate a covariance")]
    TooFewImages { images: u64 },

    /// As many channels as datapoints per CCA: every canonical correlation is trivially 1.
    #[error(
        "{method}: comparing {x_channels} (x) and {y_channels} (y) channels over only \
         {datapoints} datapoints per CCA: the centred data span every direction, so every \
         canonical correlation is trivially 1 and the similarity means nothing. Use more \
         images (the SVCCA authors advise 5-10x more datapoints than channels), try \
         --conv fold (every image x position is a datapoint), or opt in with allow_trivial"
    )]
    TrivialCca {
        method: &'static str,
        x_channels: usize,
        y_channels: usize,
        datapoints: u64,
    },

    /// google's Fourier-domain resize only handles square maps.
    #[error(
        "the google-compatible resize of layers of different spatial size needs square maps; \
         x is {x_height}x{x_width}, y is {y_height}x{y_width}. The default mode crops each \
         axis separately and handles non-square maps"
    )]
    NonSquareResize {
        x_height: usize,
        x_width: usize,
        y_height: usize,
        y_width: usize,
    },

    /// An option outside its valid range.
    #[error("invalid option {name}: {detail}")]
    InvalidOption { name: &'static str, detail: String },

    /// A frequency index outside the plan's grid, or not one this accumulator holds.
    #[error("frequency location {index} is not held here ({detail})")]
    UnknownLocation { index: usize, detail: &'static str },

    /// Two accumulators (or serialised parts) made for different comparisons.
    #[error("conv moments cannot be combined: {detail}")]
    IncompatibleMoments { detail: String },

    /// A decomposition did not converge (not expected on finite input).
    #[error("{what} did not converge at frequency ({i}, {j})")]
    NoConvergence {
        what: &'static str,
        i: usize,
        j: usize,
    },
}
