//! The TPM root: the device side ([`device`]), credential activation ([`credential`]) and the
//! public verification of quotes ([`verify`]).

pub mod credential;
pub mod device;
pub mod verify;

pub use device::{AkBlob, Quote, SealedBlob, Tpm, TpmError};
