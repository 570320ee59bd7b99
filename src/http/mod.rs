//! HTTP plumbing shared by every listener bankgate runs: the connection loop, the error
//! envelope and request ids.

pub mod error;
pub mod request_id;
pub mod server;

pub use error::{ApiError, ErrorCode};
pub use server::{ClientAddr, ServeOptions, bind, serve};
