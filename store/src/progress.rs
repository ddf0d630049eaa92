//! Progress reporting: the library calls this trait; binaries draw bars.

/// Receives progress of long operations. Implementations must be cheap to call.
pub trait Progress {
    /// A new phase begins; `total` in units when known.
    fn start(&self, _what: &str, _total: Option<u64>) {}
    /// `n` more units are done.
    fn inc(&self, _n: u64) {}
    /// The current phase is done.
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
