pub mod error;
pub mod id;
pub mod object;
pub mod objects;
pub mod storage;
pub mod tree;
pub mod merge { #[derive(Debug, Clone, serde::Serialize)] pub struct MergeConflict; }
