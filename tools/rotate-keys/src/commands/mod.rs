//! One module per command; each takes typed options and returns a typed report.

pub mod dek;
pub mod encrypt;
pub mod master;
pub mod password;
pub mod status;
