//! Direction files in the formats other tools read: safetensors, NumPy `.npy`, and the
//! llama.cpp control-vector GGUF; and reading them back.
//!
//! # Control-vector GGUF (llama.cpp `--control-vector`, repeng `export_gguf`)
//! GGUF v3, little endian: metadata `general.architecture = "controlvector"` (string),
//! `controlvector.model_hint` (string), `controlvector.layer_count` (u32), and one F32 tensor
//! `direction.ℓ` of shape `[d_model]` per layer ℓ ≥ 1. llama.cpp adds `direction.ℓ` to the
//! output of block ℓ (0-based), i.e. to `blocks.ℓ.hook_resid_post`, and refuses ℓ = 0.
//! Tensor data is aligned to 32 bytes (`general.alignment` default).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use lm_runtime::gguf::GgufFile;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::extract::{f32_bytes, f32_from_bytes};
use crate::run_dir::write_atomic;

/// The bytes of a little-endian f32 `.npy` file (format 1.0) of `shape`.
///
/// Header: `\x93NUMPY`, version `1 0`, u16 header length, then a Python dict literal padded
/// with spaces and ended by `\n` so that the data starts at a multiple of 64 bytes.
///
/// # Errors
/// When `shape` does not match `data.len()`.
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    if shape.iter().product::<usize>() != data.len() {
        bail!("npy: shape {shape:?} does not match {} values", data.len());
    }
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let shape_txt = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.div_ceil(64) * 64 - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&f32_bytes(data));
    Ok(bytes)
}

/// Reads a little-endian f32, C-order `.npy` (format 1.x or 2.x): `(shape, data)`.
///
/// # Errors
/// Any other dtype or order, a malformed header, or a data length that does not match.
pub fn read_npy(bytes: &[u8], origin: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bad = |why: &str| anyhow::anyhow!("{}: not a f32 .npy file: {why}", origin.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(&format!("version {v}"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("'descr':'<f4'") {
        return Err(bad("dtype is not '<f4'"));
    }
    if !compact.contains("'fortran_order':False") {
        return Err(bad("Fortran order"));
    }
    let shape_txt = compact
        .split("'shape':(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape = shape_txt
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("shape")))
        .collect::<Result<Vec<_>>>()?;
    let data = &bytes[start + hlen..];
    if data.len() != 4 * shape.iter().product::<usize>() {
        return Err(bad("data length does not match the shape"));
    }
    Ok((shape, f32_from_bytes(data)))
}

/// Safetensors bytes of named f32 vectors (each `[len]`), with string metadata.
///
/// # Errors
/// Serialisation errors.
pub fn safetensors_bytes(
    vectors: &[(String, Vec<f32>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let owned: Vec<(String, Vec<u8>, usize)> = vectors
        .iter()
        .map(|(n, v)| (n.clone(), f32_bytes(v), v.len()))
        .collect();
    let views = owned
        .iter()
        .map(|(n, b, len)| Ok((n.clone(), TensorView::new(Dtype::F32, vec![*len], b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(safetensors::serialize(views, &metadata)?)
}

/// Reads every 1-D f32 tensor of a safetensors file, by name.
///
/// # Errors
/// A malformed file, or a tensor that is not 1-D f32, naming it.
pub fn read_safetensors_vectors(path: &Path) -> Result<BTreeMap<String, Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, t) in st.tensors() {
        if t.dtype() != Dtype::F32 || t.shape().len() != 1 {
            bail!(
                "{}: tensor `{name}` is {:?} {:?}, expected 1-D F32",
                path.display(),
                t.dtype(),
                t.shape()
            );
        }
        out.insert(name, f32_from_bytes(t.data()));
    }
    Ok(out)
}

/// A llama.cpp control vector: one f32 vector per layer ℓ ≥ 1, added to `resid_post(ℓ)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlVector {
    /// `controlvector.model_hint` (the model architecture, e.g. `llama`).
    pub model_hint: String,
    /// Layer ℓ → vector of length d_model.
    pub layers: BTreeMap<usize, Vec<f32>>,
}

const GGUF_ALIGN: usize = 32;

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

impl ControlVector {
    /// Checks layers ≥ 1, one common non-zero width, finite values.
    ///
    /// # Errors
    /// Naming the offending layer.
    pub fn validate(&self) -> Result<usize> {
        let mut d = None;
        if self.layers.is_empty() {
            bail!("a control vector needs at least one layer");
        }
        for (&l, v) in &self.layers {
            if l == 0 {
                bail!("control vector layer 0: llama.cpp refuses direction.0 (layers start at 1)");
            }
            if v.is_empty() || *d.get_or_insert(v.len()) != v.len() {
                bail!("control vector layer {l}: length {} differs", v.len());
            }
            if v.iter().any(|x| !x.is_finite()) {
                bail!("control vector layer {l}: non-finite value");
            }
        }
        Ok(d.unwrap_or(0))
    }

    /// The GGUF v3 bytes (see the module docs). `controlvector.layer_count` is the number of
    /// tensors written, as repeng writes it.
    ///
    /// # Errors
    /// As [`ControlVector::validate`].
    pub fn to_gguf_bytes(&self) -> Result<Vec<u8>> {
        let d = self.validate()?;
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(self.layers.len() as u64).to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes()); // metadata entries
        const STRING: u32 = 8;
        const UINT32: u32 = 4;
        put_str(&mut b, "general.architecture");
        b.extend_from_slice(&STRING.to_le_bytes());
        put_str(&mut b, "controlvector");
        put_str(&mut b, "controlvector.model_hint");
        b.extend_from_slice(&STRING.to_le_bytes());
        put_str(&mut b, &self.model_hint);
        put_str(&mut b, "controlvector.layer_count");
        b.extend_from_slice(&UINT32.to_le_bytes());
        b.extend_from_slice(&(self.layers.len() as u32).to_le_bytes());
        let stride = (4 * d).div_ceil(GGUF_ALIGN) * GGUF_ALIGN;
        for (k, &l) in self.layers.keys().enumerate() {
            put_str(&mut b, &format!("direction.{l}"));
            b.extend_from_slice(&1u32.to_le_bytes()); // n_dims
            b.extend_from_slice(&(d as u64).to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes()); // GGML_TYPE_F32
            b.extend_from_slice(&((k * stride) as u64).to_le_bytes());
        }
        b.resize(b.len().div_ceil(GGUF_ALIGN) * GGUF_ALIGN, 0);
        for v in self.layers.values() {
            let start = b.len();
            b.extend_from_slice(&f32_bytes(v));
            b.resize(start + stride, 0);
        }
        Ok(b)
    }

    /// Writes the GGUF atomically.
    ///
    /// # Errors
    /// As [`ControlVector::to_gguf_bytes`], and I/O errors naming the path.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_gguf_bytes()?)
    }

    /// Reads a control-vector GGUF as written by llama.cpp's `cvector-generator`, repeng's
    /// `export_gguf` or [`ControlVector::write`]: every tensor `direction.ℓ` (F32, 1-D).
    /// A missing `controlvector.model_hint` reads as empty.
    ///
    /// # Errors
    /// A file that is not GGUF, a tensor named otherwise or not F32 1-D, layer 0, unequal
    /// widths, naming the file and tensor.
    pub fn read(path: &Path) -> Result<Self> {
        let mut f = GgufFile::open(path).with_context(|| format!("reading {}", path.display()))?;
        let arch = f
            .get("general.architecture")
            .and_then(|v| v.to_string().ok().cloned());
        if let Some(a) = &arch {
            if a != "controlvector" {
                bail!(
                    "{}: general.architecture is `{a}`, not `controlvector`",
                    path.display()
                );
            }
        }
        let model_hint = f
            .get("controlvector.model_hint")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default();
        let infos: Vec<(String, Vec<usize>)> = f
            .content()
            .tensor_infos
            .iter()
            .map(|(n, i)| (n.clone(), i.shape.dims().to_vec()))
            .collect();
        let mut layers = BTreeMap::new();
        for (name, dims) in infos {
            let l: usize = name
                .strip_prefix("direction.")
                .and_then(|s| s.parse().ok())
                .with_context(|| {
                    format!(
                        "{}: tensor `{name}` is not named direction.N",
                        path.display()
                    )
                })?;
            if dims.len() != 1 {
                bail!(
                    "{}: tensor `{name}` has shape {dims:?}, expected 1-D",
                    path.display()
                );
            }
            let q = f
                .tensor(&name, &dims, &Device::Cpu)
                .with_context(|| format!("{}: tensor `{name}`", path.display()))?;
            if q.dtype() != candle_core::quantized::GgmlDType::F32 {
                bail!(
                    "{}: tensor `{name}` is {:?}; control vectors are F32",
                    path.display(),
                    q.dtype()
                );
            }
            let v: Vec<f32> = q.dequantize(&Device::Cpu)?.to_vec1()?;
            layers.insert(l, v);
        }
        let cv = Self { model_hint, layers };
        cv.validate()
            .with_context(|| format!("control vector {}", path.display()))?;
        Ok(cv)
    }
}
