//! The KES API: pure `(Request, Identity, &State) -> Response`.
