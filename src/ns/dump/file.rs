//! One safetensors file read in bounded memory: the header once, then one tensor at a time
//! from its offset (the file is never loaded whole).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use safetensors::Dtype;
use safetensors::tensor::Metadata;

use crate::error::{QuantError, Result};

/// The largest header accepted (safetensors' own limit).
const MAX_HEADER: u64 = 100_000_000;

/// A tensor read from a dump, in the precision it was stored in (`F16` and `BF16` widen to
/// `f32` exactly).
#[derive(Debug, Clone, PartialEq)]
pub enum DumpTensor {
    /// `F32`, `F16` or `BF16` values.
    F32(ArrayD<f32>),
    /// `F64` values.
    F64(ArrayD<f64>),
}

impl DumpTensor {
    /// The shape.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        match self {
            DumpTensor::F32(a) => a.shape(),
            DumpTensor::F64(a) => a.shape(),
        }
    }

    /// The values as `f32` (`F64` rounded to nearest).
    #[must_use]
    pub fn into_f32(self) -> ArrayD<f32> {
        match self {
            DumpTensor::F32(a) => a,
            #[allow(clippy::cast_possible_truncation)]
            DumpTensor::F64(a) => a.mapv(|v| v as f32),
        }
    }

    /// The values as `f64` (exact).
    #[must_use]
    pub fn into_f64(self) -> ArrayD<f64> {
        match self {
            DumpTensor::F32(a) => a.mapv(f64::from),
            DumpTensor::F64(a) => a,
        }
    }
}

/// Where the bytes are.
#[derive(Debug)]
enum Source<'a> {
    Bytes(&'a [u8]),
    File(File),
}

/// A tensor's place in the file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    start: u64,
    len: u64,
}

/// One dump file: its header parsed and checked, its tensors read on demand.
#[derive(Debug)]
pub(crate) struct DumpFile<'a> {
    source: Source<'a>,
    /// What error messages call the file (its path, or "float dump").
    pub(crate) label: String,
    pub(crate) entries: HashMap<String, Entry>,
    pub(crate) metadata: HashMap<String, String>,
}

impl<'a> DumpFile<'a> {
    /// A dump given as bytes.
    pub(crate) fn from_bytes(op: &'static str, label: &str, bytes: &'a [u8]) -> Result<Self> {
        let header = header_bytes(op, label, bytes.len() as u64, |buf, at| {
            let at = usize::try_from(at).ok();
            let src = at.and_then(|a| bytes.get(a..a.checked_add(buf.len())?));
            match src {
                Some(s) => {
                    buf.copy_from_slice(s);
                    Ok(())
                }
                None => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            }
        })?;
        Self::new(op, label, Source::Bytes(bytes), bytes.len() as u64, &header)
    }

    /// A dump file, opened; only its header is read.
    pub(crate) fn open(op: &'static str, path: &Path) -> Result<DumpFile<'static>> {
        let label = path.display().to_string();
        let mut file = File::open(path).map_err(|e| QuantError::io(op, path, e))?;
        let len = file
            .metadata()
            .map_err(|e| QuantError::io(op, path, e))?
            .len();
        let header = header_bytes(op, &label, len, |buf, at| {
            file.seek(SeekFrom::Start(at))?;
            file.read_exact(buf)
        })?;
        DumpFile::new(op, &label, Source::File(file), len, &header)
    }

    fn new(
        op: &'static str,
        label: &str,
        source: Source<'a>,
        file_len: u64,
        header: &[u8],
    ) -> Result<Self> {
        let unreadable =
            |e| QuantError::parse(op, format!("{label}: not a readable safetensors file"), e);
        let bad = |detail: String| corrupt(op, label, detail);
        let text = std::str::from_utf8(header).map_err(|e| bad(format!("header: {e}")))?;
        let meta: Metadata = serde_json::from_str(text).map_err(unreadable)?;
        let data_start = 8 + header.len() as u64;
        let data_len = file_len - data_start;
        let mut entries = HashMap::new();
        let mut spans: Vec<(u64, u64, &str)> = Vec::new();
        let infos = meta.tensors();
        for (name, info) in &infos {
            let (s, e) = info.data_offsets;
            let elements = info
                .shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                .ok_or_else(|| bad(format!("tensor `{name}`: its shape overflows")))?;
            let bits = elements
                .checked_mul(info.dtype.bitsize() as u64)
                .ok_or_else(|| bad(format!("tensor `{name}`: its size overflows")))?;
            let (s, e) = (s as u64, e as u64);
            if e < s || e > data_len || bits % 8 != 0 || e - s != bits / 8 {
                return Err(bad(format!(
                    "tensor `{name}`: offsets {s}..{e} do not hold {elements} {:?} values within the {data_len} data bytes",
                    info.dtype
                )));
            }
            spans.push((s, e, name.as_str()));
            entries.insert(
                name.clone(),
                Entry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: data_start + s,
                    len: e - s,
                },
            );
        }
        spans.sort_unstable();
        let mut end = 0;
        for (s, e, name) in &spans {
            if *s != end {
                return Err(bad(format!(
                    "tensor `{name}` starts at {s}, not where the one before ends ({end})"
                )));
            }
            end = *e;
        }
        if end != data_len {
            return Err(bad(format!(
                "the tensors hold {end} bytes, the file {data_len} after its header"
            )));
        }
        Ok(DumpFile {
            source,
            label: label.to_string(),
            entries,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// The tensor's raw bytes.
    fn bytes(&self, op: &'static str, e: &Entry) -> Result<Vec<u8>> {
        let len = usize::try_from(e.len).map_err(|_| QuantError::TooLarge {
            op,
            what: "dump tensor bytes",
            elements: usize::MAX,
            max: usize::MAX,
        })?;
        match &self.source {
            Source::Bytes(b) => {
                let at = e.start as usize;
                Ok(b[at..at + len].to_vec())
            }
            Source::File(f) => {
                let mut buf = vec![0u8; len];
                let mut f = f;
                f.seek(SeekFrom::Start(e.start))
                    .and_then(|_| f.read_exact(&mut buf))
                    .map_err(|err| QuantError::io(op, Path::new(&self.label), err))?;
                Ok(buf)
            }
        }
    }

    /// Whether the file holds `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The shape of `name`.
    pub(crate) fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Reads a float tensor: `Ok(None)` when absent, `Err(Format)` for another dtype.
    pub(crate) fn read(&self, op: &'static str, name: &str) -> Result<Option<DumpTensor>> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        let data = self.bytes(op, e)?;
        let shape = IxDyn(&e.shape);
        fn arr<T>(
            op: &'static str,
            label: &str,
            name: &str,
            r: std::result::Result<ArrayD<T>, ndarray::ShapeError>,
        ) -> Result<ArrayD<T>> {
            r.map_err(|err| QuantError::Format {
                op,
                detail: format!("{label}: tensor `{name}`: {err}"),
            })
        }
        let l = self.label.as_str();
        let t = match e.dtype {
            Dtype::F32 => DumpTensor::F32(arr(
                op,
                l,
                name,
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
            )?),
            Dtype::F16 => DumpTensor::F32(arr(
                op,
                l,
                name,
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(2)
                        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                ),
            )?),
            Dtype::BF16 => DumpTensor::F32(arr(
                op,
                l,
                name,
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(2)
                        .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                ),
            )?),
            Dtype::F64 => DumpTensor::F64(arr(
                op,
                l,
                name,
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(8)
                        .map(|c| {
                            f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                        })
                        .collect(),
                ),
            )?),
            other => {
                return Err(QuantError::Format {
                    op,
                    detail: format!("non-float dtype {other:?}"),
                });
            }
        };
        Ok(Some(t))
    }

    /// Reads a mask-like tensor of any numeric dtype as `f64` (nonzero = true).
    pub(crate) fn read_numbers(&self, op: &'static str, name: &str) -> Result<Option<ArrayD<f64>>> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        if matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) {
            return Ok(self.read(op, name)?.map(DumpTensor::into_f64));
        }
        let data = self.bytes(op, e)?;
        let values: Vec<f64> = match e.dtype {
            Dtype::BOOL | Dtype::U8 => data.iter().map(|&b| f64::from(b)).collect(),
            Dtype::I8 => data.iter().map(|&b| f64::from(b as i8)).collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            #[allow(clippy::cast_precision_loss)]
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| {
                    i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64
                })
                .collect(),
            other => {
                return Err(QuantError::Format {
                    op,
                    detail: format!("{}: `{name}`: unsupported dtype {other:?}", self.label),
                });
            }
        };
        ArrayD::from_shape_vec(IxDyn(&e.shape), values)
            .map(Some)
            .map_err(|err| QuantError::Format {
                op,
                detail: format!("{}: tensor `{name}`: {err}", self.label),
            })
    }
}

/// Reads the header (the 8-byte length, then the JSON) with `read_at`, checking the length
/// against the file's before allocating.
fn header_bytes(
    op: &'static str,
    label: &str,
    file_len: u64,
    mut read_at: impl FnMut(&mut [u8], u64) -> std::io::Result<()>,
) -> Result<Vec<u8>> {
    let bad = |detail: String| corrupt(op, label, detail);
    let mut n = [0u8; 8];
    if file_len < 8 {
        return Err(bad(format!("{file_len} bytes: too short for a header")));
    }
    read_at(&mut n, 0)
        .map_err(|e| QuantError::parse(op, format!("{label}: unreadable header"), e))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n > file_len - 8 {
        return Err(bad(format!(
            "a header of {n} bytes in a file of {file_len} (at most {MAX_HEADER})"
        )));
    }
    let mut header = vec![0u8; n as usize];
    read_at(&mut header, 8)
        .map_err(|e| QuantError::parse(op, format!("{label}: unreadable header"), e))?;
    Ok(header)
}

/// A file that is not a readable safetensors file: a [`QuantError::Parse`] whose source says
/// what is wrong.
fn corrupt(op: &'static str, label: &str, detail: String) -> QuantError {
    QuantError::parse(
        op,
        format!("{label}: not a readable safetensors file"),
        std::io::Error::new(std::io::ErrorKind::InvalidData, detail),
    )
}
