//! State dicts: named arrays loaded from `.safetensors` files (feature `safetensors`), and
//! layers built from them with PyTorch's names and layouts.
//!
//! ```no_run
//! use qnumeric::nn::{ConvGeometry, ReLU, Sequential};
//! use qnumeric::state_dict::StateDict;
//! let sd = StateDict::load("data/digits/digits_cnn.safetensors")?;
//! let _model = Sequential::new()
//!     .with("conv1", sd.conv2d("conv1", ConvGeometry::default().padding(1, 1))?)?
//!     .with("relu1", ReLU)?;
//! # Ok::<(), qnumeric::QuantError>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};

use crate::error::{QuantError, Result};
use crate::nn::{BatchNormParams, Conv2d, ConvGeometry, Linear};

/// One stored array.
#[derive(Debug, Clone, PartialEq)]
pub enum StateTensor {
    /// `F32` data.
    F32(ArrayD<f32>),
    /// `I32` data (also `I64` data that fits, narrowed).
    I32(ArrayD<i32>),
}

/// Named arrays, as in a PyTorch `state_dict` (`"conv1.weight"`, `"bn1.running_mean"`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDict {
    tensors: BTreeMap<String, StateTensor>,
}

fn format_err(detail: String) -> QuantError {
    QuantError::Format {
        op: "StateDict::load",
        detail,
    }
}

impl StateDict {
    /// Reads a `.safetensors` file.
    ///
    /// # Errors
    /// [`QuantError::Io`] when the file cannot be read, [`QuantError::Parse`] when it is not
    /// safetensors, [`QuantError::Format`] when it holds a dtype other
    /// than `F32`, `I32` or `I64` (or `I64` values beyond the `i32` range).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| QuantError::io("StateDict::load", path, e))?;
        Self::from_bytes(&bytes)
    }

    /// Parses the bytes of a `.safetensors` file.
    ///
    /// # Errors
    /// As [`StateDict::load`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| QuantError::parse("StateDict::load", "safetensors", e))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let data = view.data();
            let t = match view.dtype() {
                Dtype::F32 => StateTensor::F32(array(
                    &shape,
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )?),
                Dtype::I32 => StateTensor::I32(array(
                    &shape,
                    data.chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )?),
                Dtype::I64 => {
                    let mut v = Vec::with_capacity(data.len() / 8);
                    for c in data.chunks_exact(8) {
                        let x =
                            i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                        v.push(i32::try_from(x).map_err(|_| {
                            format_err(format!("{name}: I64 value {x} beyond the i32 range"))
                        })?);
                    }
                    StateTensor::I32(array(&shape, v)?)
                }
                other => {
                    return Err(format_err(format!(
                        "{name}: unsupported dtype {other:?} (F32, I32, I64 are)"
                    )));
                }
            };
            tensors.insert(name, t);
        }
        Ok(StateDict { tensors })
    }

    /// Adds or replaces an `f32` array.
    pub fn insert_f32(&mut self, name: impl Into<String>, a: ArrayD<f32>) {
        self.tensors.insert(name.into(), StateTensor::F32(a));
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of arrays.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no arrays.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The array under `name`, whatever its dtype.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&StateTensor> {
        self.tensors.get(name)
    }

    /// The `f32` array under `name`.
    ///
    /// # Errors
    /// [`QuantError::NotFound`] when there is none; [`QuantError::Format`] when it is not
    /// `f32`.
    pub fn f32(&self, name: &str) -> Result<&ArrayD<f32>> {
        match self.lookup(name)? {
            StateTensor::F32(a) => Ok(a),
            StateTensor::I32(_) => Err(QuantError::Format {
                op: "StateDict::f32",
                detail: format!("{name} holds integers, not f32"),
            }),
        }
    }

    /// The `i32` array under `name`.
    ///
    /// # Errors
    /// [`QuantError::NotFound`] when there is none; [`QuantError::Format`] when it is not an
    /// integer array.
    pub fn i32(&self, name: &str) -> Result<&ArrayD<i32>> {
        match self.lookup(name)? {
            StateTensor::I32(a) => Ok(a),
            StateTensor::F32(_) => Err(QuantError::Format {
                op: "StateDict::i32",
                detail: format!("{name} holds f32, not integers"),
            }),
        }
    }

    fn lookup(&self, name: &str) -> Result<&StateTensor> {
        self.tensors.get(name).ok_or_else(|| QuantError::NotFound {
            op: "StateDict",
            what: "tensor",
            name: name.to_string(),
        })
    }

    fn vec(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self.f32(name)?.iter().copied().collect())
    }

    fn optional(&self, name: &str) -> Result<Option<ArrayD<f32>>> {
        match self.tensors.get(name) {
            None => Ok(None),
            Some(_) => self.f32(name).map(|a| Some(a.clone())),
        }
    }

    /// A [`Linear`] from `<prefix>.weight` and (if present) `<prefix>.bias`.
    ///
    /// # Errors
    /// As [`StateDict::f32`] and [`Linear::new`].
    pub fn linear(&self, prefix: &str) -> Result<Linear> {
        Linear::new(
            self.f32(&format!("{prefix}.weight"))?.clone(),
            self.optional(&format!("{prefix}.bias"))?,
        )
    }

    /// A [`Conv2d`] from `<prefix>.weight` and (if present) `<prefix>.bias`.
    ///
    /// # Errors
    /// As [`StateDict::f32`] and [`Conv2d::new`].
    pub fn conv2d(&self, prefix: &str, geo: ConvGeometry) -> Result<Conv2d> {
        Conv2d::new(
            self.f32(&format!("{prefix}.weight"))?.clone(),
            self.optional(&format!("{prefix}.bias"))?,
            geo,
        )
    }

    /// Batch-norm parameters from `<prefix>.running_mean`, `.running_var` and (if present)
    /// `.weight`, `.bias`.
    ///
    /// # Errors
    /// As [`StateDict::f32`] and [`BatchNormParams::validate`].
    pub fn batch_norm_params(&self, prefix: &str, eps: f64) -> Result<BatchNormParams> {
        let p = BatchNormParams {
            running_mean: self.vec(&format!("{prefix}.running_mean"))?,
            running_var: self.vec(&format!("{prefix}.running_var"))?,
            weight: self
                .optional(&format!("{prefix}.weight"))?
                .map(|a| a.iter().copied().collect()),
            bias: self
                .optional(&format!("{prefix}.bias"))?
                .map(|a| a.iter().copied().collect()),
            eps,
        };
        p.validate("StateDict::batch_norm_params")?;
        Ok(p)
    }
}

fn array<T>(shape: &[usize], data: Vec<T>) -> Result<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| format_err(e.to_string()))
}
