//! One file per resource; handlers are named `handle_<verb>_<resource>` and take the
//! [`crate::auth::Authorized`] proof so that none can run unchecked.

pub mod identity;
pub mod key;
pub mod log;
pub mod policy;
pub mod status;

use crate::api::wire::to_go_json;
use crate::http::Response;

/// A 200 JSON response encoded as Go encodes it.
pub fn json(value: &impl serde::Serialize) -> Response {
    Response::with_body(200, "application/json", to_go_json(value))
}

/// A 200 response with no body.
pub fn empty() -> Response {
    Response::new(200)
}
