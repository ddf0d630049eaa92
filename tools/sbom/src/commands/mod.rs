//! One module per command: typed options in, typed result out.

pub mod check;
pub mod generate;
pub mod keygen;
pub mod provenance;
pub mod scan;
pub mod sign;

pub use check::{check, CheckOptions, CheckResult};
pub use generate::{generate, GenerateOptions, GenerateResult};
pub use keygen::{keygen, KeygenOptions, KeygenResult};
pub use provenance::{
    provenance, verify_provenance, ProvenanceOptions, ProvenanceResult, VerifyProvenanceOptions,
    VerifyProvenanceResult,
};
pub use scan::{scan, ScanOptions, ScanResult, Severity};
pub use sign::{sign, verify, SignOptions, SignResult, VerifyOptions, VerifyResult};
