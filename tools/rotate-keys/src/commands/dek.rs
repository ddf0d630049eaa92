//! `qg-rotate-keys dek`: a new data key for a namespace; every object is re-encrypted.

use serde::{Deserialize, Serialize};

use qg_store::progress::Progress;
use qg_store::rotation::{rekey, RekeyKind, RekeyOptions, RekeyReport};
use qg_store::{Result, Store};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DekOptions {
    pub ns: String,
    pub rekey: RekeyOptions,
}

/// Start a rotation, or finish one a killed run left behind.
pub fn run(store: &mut Store, opts: &DekOptions, progress: &dyn Progress) -> Result<RekeyReport> {
    rekey(store, &opts.ns, RekeyKind::Dek, &opts.rekey, progress)
}
