//! The verifier API's wire contract, with no I/O: what verifier, host agent and shim send and
//! answer. The server builds its answers from these types and the clients read them back.

mod error_code;

pub use error_code::ErrorCode;
