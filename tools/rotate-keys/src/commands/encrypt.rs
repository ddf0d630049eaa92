//! `qg-rotate-keys encrypt`: migrate a plaintext namespace to an encrypted one.

use serde::{Deserialize, Serialize};

use qg_store::progress::Progress;
use qg_store::rotation::{rekey, RekeyKind, RekeyOptions, RekeyReport};
use qg_store::{Result, Store};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EncryptOptions {
    pub ns: String,
    pub rekey: RekeyOptions,
}

/// Start the migration, or finish one a killed run left behind. Running it on
/// an already encrypted namespace does nothing and says so.
pub fn run(
    store: &mut Store,
    opts: &EncryptOptions,
    progress: &dyn Progress,
) -> Result<RekeyReport> {
    rekey(store, &opts.ns, RekeyKind::Encrypt, &opts.rekey, progress)
}
