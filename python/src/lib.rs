//! `qnumeric._qnumeric`: the Rust half of the `qnumeric` Python package (see
//! `python/README.md`). The library crate does the work; this crate converts NumPy arrays,
//! Python arguments and errors, and releases the GIL while the crate computes.

use pyo3::prelude::*;

mod arrays;
mod dumps;
mod errors;
mod kernel_check;
mod kernels;
mod log;
mod metrics;
mod observers;

#[pymodule]
fn _qnumeric(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<kernels::PyQParams>()?;
    m.add_class::<kernels::PyPerChannelQParams>()?;
    m.add_function(wrap_pyfunction!(kernels::quantize, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::quantize_per_channel, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::dequantize_per_channel, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::fake_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::fake_quantize_per_channel, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::fake_quantize_backward, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::choose_qparams, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::sqnr, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::mse, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::max_abs_error, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::cosine_similarity, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::normalized_l2_error, m)?)?;
    observers::register(m)?;
    m.add_class::<dumps::PyDumpComparison>()?;
    m.add_class::<dumps::PyDiagnosis>()?;
    m.add_class::<dumps::PyDumpReader>()?;
    m.add_class::<log::PyNumericLog>()?;
    m.add_class::<log::PyNsReport>()?;
    m.add_class::<kernel_check::PyKernelReport>()?;
    m.add_function(wrap_pyfunction!(kernel_check::check_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(dumps::compare_dumps, m)?)?;
    m.add_function(wrap_pyfunction!(dumps::diagnose_dumps_py, m)?)?;
    Ok(())
}
