//! Borrowed 4-D activation blocks: `[images, h, w, c]` (NHWC, google's and TensorFlow's layout)
//! or `[images, c, h, w]` (NCHW, PyTorch's), row-major, f32 or f64.

use serde::{Deserialize, Serialize};

use super::error::{ConvError, Side};

/// Memory layout of a 4-D activation array (row-major in both cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[images, height, width, channels]`.
    #[default]
    Nhwc,
    /// `[images, channels, height, width]`.
    Nchw,
}

impl Layout {
    /// The per-image shape of an array stored with this layout (`shape` includes the image axis).
    pub fn spatial_shape(self, shape: &[usize]) -> Result<SpatialShape, ConvError> {
        let &[_, a, b, c] = shape else {
            return Err(ConvError::NotFourD {
                shape: shape.to_vec(),
            });
        };
        Ok(match self {
            Layout::Nhwc => SpatialShape::new(a, b, c),
            Layout::Nchw => SpatialShape::new(b, c, a),
        })
    }
}

/// Per-image shape of a conv layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SpatialShape {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl SpatialShape {
    pub fn new(height: usize, width: usize, channels: usize) -> Self {
        SpatialShape {
            height,
            width,
            channels,
        }
    }

    /// Values per image.
    pub fn len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// True when any dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn check(&self, side: Side) -> Result<(), ConvError> {
        if self.is_empty() {
            return Err(ConvError::EmptyDimension {
                side,
                height: self.height,
                width: self.width,
                channels: self.channels,
            });
        }
        Ok(())
    }

    pub(crate) fn as_array(&self) -> [usize; 3] {
        [self.height, self.width, self.channels]
    }
}

/// The values of a block, in their stored precision (widened to f64 per image).
#[derive(Debug, Clone, Copy)]
pub enum ConvData<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl ConvData<'_> {
    fn len(&self) -> usize {
        match self {
            ConvData::F32(d) => d.len(),
            ConvData::F64(d) => d.len(),
        }
    }
}

/// A borrowed block of images of one conv layer.
#[derive(Debug, Clone, Copy)]
pub struct ConvInput<'a> {
    data: ConvData<'a>,
    images: usize,
    shape: SpatialShape,
    layout: Layout,
}

impl<'a> ConvInput<'a> {
    /// A block from its data, its 4-D shape as stored (`[n, h, w, c]` for NHWC,
    /// `[n, c, h, w]` for NCHW) and the layout. Checks the rank and the buffer length.
    pub fn new(data: ConvData<'a>, shape: &[usize], layout: Layout) -> Result<Self, ConvError> {
        let spatial = layout.spatial_shape(shape)?;
        let n = shape[0];
        let expected = n * spatial.len();
        if data.len() != expected {
            return Err(ConvError::BufferLength {
                shape: shape.to_vec(),
                expected,
                len: data.len(),
            });
        }
        Ok(ConvInput {
            data,
            images: n,
            shape: spatial,
            layout,
        })
    }

    /// [`ConvInput::new`] for f32 data.
    pub fn f32(data: &'a [f32], shape: &[usize], layout: Layout) -> Result<Self, ConvError> {
        Self::new(ConvData::F32(data), shape, layout)
    }

    /// [`ConvInput::new`] for f64 data.
    pub fn f64(data: &'a [f64], shape: &[usize], layout: Layout) -> Result<Self, ConvError> {
        Self::new(ConvData::F64(data), shape, layout)
    }

    /// Number of images in the block.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Per-image shape (whatever the layout).
    pub fn spatial(&self) -> SpatialShape {
        self.shape
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn data(&self) -> ConvData<'a> {
        self.data
    }

    /// Images `start..end` of this block (a cheap view), for streaming an in-memory array.
    ///
    /// # Panics
    /// If `start > end` or `end > self.images()`.
    pub fn images_range(&self, start: usize, end: usize) -> ConvInput<'a> {
        assert!(
            start <= end && end <= self.images,
            "image range out of bounds"
        );
        let per = self.shape.len();
        let data = match self.data {
            ConvData::F32(d) => ConvData::F32(&d[start * per..end * per]),
            ConvData::F64(d) => ConvData::F64(&d[start * per..end * per]),
        };
        ConvInput {
            data,
            images: end - start,
            shape: self.shape,
            layout: self.layout,
        }
    }
}
