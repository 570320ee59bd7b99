//! HTTP plumbing shared by every listener bankgate runs: the connection loop, the error
//! envelope and request ids.

mod connection;
pub mod error;
pub mod request_id;
pub mod server;

pub use error::{ApiError, ErrorCode};
pub use server::{ClientAddr, ServeOptions, bind, serve};

/// A request header as sent (a reference-counted view, no copy), `None` when absent.
pub fn optional_header(
    name: &'static str,
) -> impl warp::Filter<Extract = (Option<warp::http::HeaderValue>,), Error = std::convert::Infallible>
+ Clone {
    use warp::Filter;
    warp::header::value(name)
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}
