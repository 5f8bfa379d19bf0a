//! The model registry: signed bundles by model and version (docs/bundle.md).
//!
//! # Layout
//! - [`store`]: push (validate, canonicalise, sign with the PKI's `signing.key`, store
//!   atomically; a version is never overwritten with other content), get, list.
//! - [`pack`](mod@pack): a bundle from a model folder of the repository (device variant, self-tests).
//! - [`record`]: the self-tests' expected answers recorded with the engine (`models pack`).
//! - [`cli`]: `tandem-hub models push|list|pack`.
//! - [`http`]: `GET /v1/models`.
//! - [`transfer`]: model download over QUIC (bundle offers, file chunks by offset).

pub mod cli;
pub mod http;
pub mod pack;
pub mod record;
pub mod store;
pub mod transfer;

pub use cli::ModelsCmd;
pub use pack::{PackOptions, pack};
pub use store::{Entry, Pushed, Registry, RegistryError, load_signer};
