//! Buffers aligned for SIMD.

/// A buffer whose first value lies on a 64-byte boundary, so that SIMD loads from it do not
/// straddle cache lines.
#[derive(Debug, Default)]
pub(crate) struct Aligned {
    buf: Vec<f64>,
    base: usize,
    len: usize,
}

impl Aligned {
    /// `len` zeros.
    pub(crate) fn zeros(len: usize) -> Self {
        let buf = vec![0.0; len + 7];
        let base = match buf.as_ptr().align_offset(64) {
            b @ 0..=7 => b,
            _ => 0,
        };
        Self { buf, base, len }
    }

    /// Makes the buffer `len` long, keeping its memory (and values) when it is large enough:
    /// values beyond the old length are unspecified (zero when newly allocated).
    pub(crate) fn resize(&mut self, len: usize) {
        if self.buf.len() < self.base + len {
            *self = Self::zeros(len);
        } else {
            self.len = len;
        }
    }
}

impl std::ops::Deref for Aligned {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        &self.buf[self.base..self.base + self.len]
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f64] {
        &mut self.buf[self.base..self.base + self.len]
    }
}
