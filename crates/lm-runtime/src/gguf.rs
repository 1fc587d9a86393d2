//! A defensive GGUF reader.
//!
//! The header is parsed here rather than by `candle_core::quantized::gguf_file::Content::read`
//! because that reader sizes allocations by untrusted header fields (string and array
//! lengths, tensor dimensions). Here every length is checked against the bytes that remain in
//! the file before anything is allocated, tensor shapes are bounded, and each tensor's data
//! range must lie inside the file. The result is a plain candle [`Content`], so tensors are
//! then read with candle's own (trusted) dequantization code.
//!
//! Layout (GGUF v2/v3, little endian): magic `GGUF`, version `u32`, tensor count `u64`,
//! metadata count `u64`, metadata `(string key, u32 type, value)*`, tensor infos
//! `(string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset)*`, padding to
//! `general.alignment` (default 32), tensor data.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

/// Most metadata entries or tensors a header may declare.
const MAX_COUNT: u64 = 1 << 20;
/// Most dimensions a tensor may have (ggml supports 4).
const MAX_DIMS: u32 = 4;
/// Most elements one tensor may hold (2^40, far above any CPU-sized model).
const MAX_ELEMS: u64 = 1 << 40;
/// Deepest nesting of metadata arrays accepted.
const MAX_ARRAY_DEPTH: u32 = 2;

/// Errors from reading a GGUF file; each names the key, tensor or byte offset at fault.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The header is malformed, truncated or declares absurd sizes.
    #[error("corrupt GGUF header at byte {offset}: {what}")]
    Corrupt {
        /// Byte offset where parsing failed.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// A required metadata key is absent.
    #[error("metadata key `{key}` is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata key holds a value of the wrong type.
    #[error("metadata key `{key}` has type {got}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The expected type.
        expected: &'static str,
        /// The type found.
        got: String,
    },
    /// A metadata value is out of its valid range.
    #[error("metadata key `{key}` has invalid value {value}: {why}")]
    BadValue {
        /// The key.
        key: String,
        /// The value, printed.
        value: String,
        /// Why it was refused.
        why: String,
    },
    /// A required tensor is absent.
    #[error("tensor `{name}` is missing")]
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// A tensor has an unexpected shape (dims in row-major order, as candle reports them).
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor name.
        name: String,
        /// The expected dims.
        expected: Vec<usize>,
        /// The dims found.
        got: Vec<usize>,
    },
    /// A tensor's data could not be loaded.
    #[error("tensor `{name}`: {why}")]
    BadTensor {
        /// The tensor name.
        name: String,
        /// Why.
        why: String,
    },
}

/// An open GGUF file: validated header plus a reader for tensor data.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens and validates the header of the GGUF file at `path`.
    ///
    /// # Errors
    /// [`GgufError::Io`] if the file cannot be read, [`GgufError::Corrupt`] for any malformed,
    /// truncated or oversized header field, [`GgufError::BadTensor`] if a tensor's data lies
    /// outside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let content = read_header(&mut reader, len).map_err(|e| match e {
            HeaderError::Io(source) => io(source),
            HeaderError::Gguf(e) => e,
        })?;
        Ok(Self {
            path,
            content,
            reader,
        })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header (metadata and tensor infos).
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// All metadata entries.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// The value at `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// An unsigned integer at `key` (any integer type that fits in `u64`).
    ///
    /// # Errors
    /// [`GgufError::MissingKey`] or [`GgufError::WrongType`].
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        match self.opt_u64(key)? {
            Some(v) => Ok(v),
            None => Err(GgufError::MissingKey { key: key.into() }),
        }
    }

    /// Like [`GgufFile::u64`] but `None` when the key is absent.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] when present with a non-integer or negative value.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let wrong = || GgufError::WrongType {
            key: key.into(),
            expected: "unsigned integer",
            got: format!("{v:?}"),
        };
        let x = match *v {
            Value::U8(x) => u64::from(x),
            Value::U16(x) => u64::from(x),
            Value::U32(x) => u64::from(x),
            Value::U64(x) => x,
            Value::I8(x) => u64::try_from(x).map_err(|_| wrong())?,
            Value::I16(x) => u64::try_from(x).map_err(|_| wrong())?,
            Value::I32(x) => u64::try_from(x).map_err(|_| wrong())?,
            Value::I64(x) => u64::try_from(x).map_err(|_| wrong())?,
            _ => return Err(wrong()),
        };
        Ok(Some(x))
    }

    /// A float at `key` (`f32` or `f64`), `None` when absent.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] when present with a non-float value.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(f64::from(*x))),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => Err(GgufError::WrongType {
                key: key.into(),
                expected: "float",
                got: format!("{:?}", v.value_type()),
            }),
        }
    }

    /// A string at `key`.
    ///
    /// # Errors
    /// [`GgufError::MissingKey`] or [`GgufError::WrongType`].
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        match self.get(key) {
            None => Err(GgufError::MissingKey { key: key.into() }),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(GgufError::WrongType {
                key: key.into(),
                expected: "string",
                got: format!("{:?}", v.value_type()),
            }),
        }
    }

    /// The info (dtype, dims, offset) of tensor `name`.
    ///
    /// # Errors
    /// [`GgufError::MissingTensor`].
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| GgufError::MissingTensor { name: name.into() })
    }

    /// Whether tensor `name` exists.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads tensor `name`, checking its dims (row-major, e.g. `[out, in]` for a weight).
    ///
    /// # Errors
    /// [`GgufError::MissingTensor`], [`GgufError::ShapeMismatch`], or
    /// [`GgufError::BadTensor`] when the data cannot be read.
    pub fn tensor(
        &mut self,
        name: &str,
        expected: &[usize],
        device: &Device,
    ) -> Result<QTensor, GgufError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| GgufError::MissingTensor { name: name.into() })?;
        if info.shape.dims() != expected {
            return Err(GgufError::ShapeMismatch {
                name: name.into(),
                expected: expected.to_vec(),
                got: info.shape.dims().to_vec(),
            });
        }
        let bad = |e: candle_core::Error| GgufError::BadTensor {
            name: name.into(),
            why: e.to_string(),
        };
        let q = info
            .read(&mut self.reader, self.content.tensor_data_offset, device)
            .map_err(bad)?;
        // candle's Q4_1, Q5_0 and Q5_1 dot products debug-assert an even number of 32-element
        // blocks per row (ggml's SIMD code pairs them; the arithmetic is right for any count).
        // No released model has such rows, but a hostile file can declare them, so they are
        // handed out as F32, which every matmul accepts, instead of panicking in debug builds.
        let paired = matches!(
            info.ggml_dtype,
            GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
        );
        if paired && (expected.last().copied().unwrap_or(0) / 32) % 2 == 1 {
            let dense = q.dequantize(device).map_err(bad)?;
            return QTensor::quantize(&dense, GgmlDType::F32).map_err(bad);
        }
        Ok(q)
    }
}

enum HeaderError {
    Io(std::io::Error),
    Gguf(GgufError),
}

impl From<std::io::Error> for HeaderError {
    fn from(e: std::io::Error) -> Self {
        HeaderError::Io(e)
    }
}

/// A bounds-checked little-endian cursor over the header.
struct Cursor<'a, R> {
    r: &'a mut R,
    pos: u64,
    len: u64,
}

impl<R: Read> Cursor<'_, R> {
    fn corrupt(&self, what: impl Into<String>) -> HeaderError {
        HeaderError::Gguf(GgufError::Corrupt {
            offset: self.pos,
            what: what.into(),
        })
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        if self.remaining() < N as u64 {
            return Err(self.corrupt("unexpected end of file"));
        }
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A count or length that must fit in the bytes left, at `min_size` bytes per item.
    fn len_prefix(&mut self, min_size: u64, what: &str) -> Result<usize, HeaderError> {
        let n = self.u64()?;
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(self.corrupt(format!(
                "{what} length {n} exceeds the {} bytes left in the file",
                self.remaining()
            )));
        }
        usize::try_from(n).map_err(|_| self.corrupt(format!("{what} length {n} too large")))
    }

    fn string(&mut self, what: &str) -> Result<String, HeaderError> {
        let n = self.len_prefix(1, what)?;
        let mut v = vec![0u8; n];
        self.r.read_exact(&mut v)?;
        self.pos += n as u64;
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value, HeaderError> {
        Ok(match ty {
            0 => Value::U8(self.bytes::<1>()?[0]),
            1 => Value::I8(self.bytes::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            7 => match self.bytes::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.corrupt(format!("key `{key}`: bool byte {b}"))),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.corrupt(format!("key `{key}`: arrays nested too deep")));
                }
                let elem_ty = self.u32()?;
                let min_size = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    t => return Err(self.corrupt(format!("key `{key}`: unknown array type {t}"))),
                };
                let n = self.len_prefix(min_size, key)?;
                let mut vs = Vec::with_capacity(n);
                for _ in 0..n {
                    vs.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(vs)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            t => return Err(self.corrupt(format!("key `{key}`: unknown value type {t}"))),
        })
    }
}

/// Maps a ggml type id to candle's dtype (ids from ggml.h).
fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

fn read_header<R: Read + Seek>(r: &mut R, len: u64) -> Result<Content, HeaderError> {
    r.seek(SeekFrom::Start(0))?;
    let mut c = Cursor { r, pos: 0, len };
    let magic = c.u32()?;
    if magic != 0x4655_4747 {
        return Err(c.corrupt(format!("not a GGUF file (magic {magic:#010x})")));
    }
    let version = c.u32()?;
    let magic = match version {
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => return Err(c.corrupt(format!("unsupported GGUF version {v}"))),
    };
    let tensor_count = c.u64()?;
    let kv_count = c.u64()?;
    if tensor_count > MAX_COUNT || kv_count > MAX_COUNT {
        return Err(c.corrupt(format!(
            "absurd counts: {tensor_count} tensors, {kv_count} metadata entries"
        )));
    }
    // Each entry takes at least 13 bytes (8 key length, 4 type, 1 value) and each tensor info 32
    // (8 name length, 4 n_dims, 8 dim, 4 type, 8 offset): refuse counts the file cannot hold
    // before sizing anything by them.
    let least = kv_count * 13 + tensor_count * 32;
    if least > c.remaining() {
        return Err(c.corrupt(format!(
            "{tensor_count} tensors and {kv_count} metadata entries need at least {least} bytes, \
             which exceeds the {} bytes left in the file",
            c.remaining()
        )));
    }
    let mut metadata = HashMap::new();
    for _ in 0..kv_count {
        let at = c.pos;
        let key = c.string("metadata key")?;
        let ty = c.u32()?;
        let value = c.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(HeaderError::Gguf(GgufError::Corrupt {
                offset: at,
                what: format!("duplicate metadata key `{key}`"),
            }));
        }
    }
    let mut infos = Vec::with_capacity(tensor_count as usize);
    for _ in 0..tensor_count {
        let name = c.string("tensor name")?;
        let n_dims = c.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(c.corrupt(format!("tensor `{name}`: {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut elems: u64 = 1;
        for _ in 0..n_dims {
            let d = c.u64()?;
            elems = elems.saturating_mul(d);
            dims.push(d);
        }
        if dims.contains(&0) || elems > MAX_ELEMS {
            return Err(c.corrupt(format!("tensor `{name}`: absurd dims {dims:?}")));
        }
        let ty = c.u32()?;
        let dtype = ggml_dtype(ty)
            .ok_or_else(|| c.corrupt(format!("tensor `{name}`: unsupported ggml type {ty}")))?;
        let offset = c.u64()?;
        let block = dtype.block_size() as u64;
        if dims[0] % block != 0 {
            return Err(c.corrupt(format!(
                "tensor `{name}`: row length {} not a multiple of block size {block}",
                dims[0]
            )));
        }
        let bytes = elems / block * dtype.type_size() as u64;
        // ggml stores dims innermost first; candle shapes are row-major.
        let shape: Vec<usize> = dims.iter().rev().map(|&d| d as usize).collect();
        infos.push((name, dtype, shape, offset, bytes));
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.to_u32() {
            Ok(a) if a.is_power_of_two() => u64::from(a),
            _ => return Err(c.corrupt(format!("bad general.alignment {v:?}"))),
        },
    };
    let data_offset = c.pos.div_ceil(alignment) * alignment;
    let mut tensor_infos = HashMap::with_capacity(infos.len());
    for (name, dtype, shape, offset, bytes) in infos {
        if tensor_infos.contains_key(&name) {
            return Err(HeaderError::Gguf(GgufError::BadTensor {
                name,
                why: "declared twice in the header".into(),
            }));
        }
        let end = data_offset
            .checked_add(offset)
            .and_then(|s| s.checked_add(bytes));
        if !matches!(end, Some(e) if e <= len) {
            return Err(HeaderError::Gguf(GgufError::BadTensor {
                name,
                why: format!(
                    "data [{offset}, +{bytes}) past the end of the file ({len} bytes); truncated?"
                ),
            }));
        }
        tensor_infos.insert(
            name,
            TensorInfo {
                ggml_dtype: dtype,
                shape: shape.into(),
                offset,
            },
        );
    }
    Ok(Content {
        magic,
        metadata,
        tensor_infos,
        tensor_data_offset: data_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor as IoCursor;

    fn header(kvs: &[u8], n_kv: u64, n_tensors: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&n_tensors.to_le_bytes());
        b.extend_from_slice(&n_kv.to_le_bytes());
        b.extend_from_slice(kvs);
        b
    }

    fn parse(bytes: &[u8]) -> Result<Content, String> {
        let len = bytes.len() as u64;
        read_header(&mut IoCursor::new(bytes), len).map_err(|e| match e {
            HeaderError::Io(e) => format!("io {e}"),
            HeaderError::Gguf(e) => e.to_string(),
        })
    }

    #[test]
    fn hostile_string_length_is_refused_before_allocating() {
        let mut kv = Vec::new();
        kv.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        let err = parse(&header(&kv, 1, 0)).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn hostile_array_length_is_refused() {
        let mut kv = Vec::new();
        kv.extend_from_slice(&3u64.to_le_bytes());
        kv.extend_from_slice(b"abc");
        kv.extend_from_slice(&9u32.to_le_bytes());
        kv.extend_from_slice(&4u32.to_le_bytes());
        kv.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let err = parse(&header(&kv, 1, 0)).unwrap_err();
        assert!(err.contains("key `abc`") || err.contains("abc"), "{err}");
    }

    #[test]
    fn absurd_counts_and_bad_magic() {
        assert!(parse(&header(&[], u64::MAX, 0))
            .unwrap_err()
            .contains("absurd"));
        assert!(parse(b"GGML\x03\0\0\0").unwrap_err().contains("magic"));
        assert!(parse(b"GG").unwrap_err().contains("end of file"));
    }

    #[test]
    fn tensor_past_end_is_named() {
        let mut t = Vec::new();
        t.extend_from_slice(&1u64.to_le_bytes());
        t.extend_from_slice(b"w");
        t.extend_from_slice(&2u32.to_le_bytes());
        t.extend_from_slice(&4u64.to_le_bytes());
        t.extend_from_slice(&4u64.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&0u64.to_le_bytes());
        let err = parse(&header(&t, 0, 1)).unwrap_err();
        assert!(
            err.contains("tensor `w`") && err.contains("past the end"),
            "{err}"
        );
    }

    #[test]
    fn round_trip_through_candle_writer() {
        let dev = Device::Cpu;
        let w = candle_core::Tensor::arange(0f32, 64.0, &dev)
            .unwrap()
            .reshape((2, 32))
            .unwrap();
        let q = QTensor::quantize(&w, GgmlDType::F32).unwrap();
        let v = Value::U32(7);
        let mut buf = IoCursor::new(Vec::new());
        candle_core::quantized::gguf_file::write(&mut buf, &[("a.b", &v)], &[("w", &q)]).unwrap();
        let c = parse(buf.get_ref()).unwrap();
        assert_eq!(c.metadata["a.b"].to_u32().unwrap(), 7);
        assert_eq!(c.tensor_infos["w"].shape.dims(), &[2, 32]);
        let back = c
            .tensor(&mut IoCursor::new(buf.get_ref()), "w", &dev)
            .unwrap()
            .dequantize(&dev)
            .unwrap();
        let diff = (back - w).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }
}
