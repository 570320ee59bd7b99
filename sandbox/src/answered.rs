//! What lets each simulated API check a request once, in one warp filter (its preamble), and
//! leave every route only its own rendering: a request the preamble answers itself (a fault,
//! a missing header, a bad token) travels as an `Answered` rejection to the API's `answering`
//! wrapper, which turns it back into that response, so the API's rate-limit stamp still
//! applies to it. The preamble runs after its route's path and method matched, so it runs
//! (and a fault is counted) once per request.

use std::sync::Mutex;

use warp::reply::Response;
use warp::{Filter, Rejection};

/// A response decided by a preamble. `Mutex` because a rejection must be `Sync`.
pub struct Answered(Mutex<Option<Response>>);

impl std::fmt::Debug for Answered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answered")
    }
}

impl warp::reject::Reject for Answered {}

impl Answered {
    pub fn reject(response: Response) -> Rejection {
        warp::reject::custom(Answered(Mutex::new(Some(response))))
    }
}

/// `api` with its preambles' early answers given as responses; other rejections pass on.
pub fn answering<F>(api: F) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone
where
    F: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    api.recover(|rejection: Rejection| async move {
        let answer = rejection
            .find::<Answered>()
            .and_then(|answered| answered.0.lock().expect("answer").take());
        answer.ok_or(rejection)
    })
    .unify()
}
