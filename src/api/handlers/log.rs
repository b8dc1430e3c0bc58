//! `/v1/log/error` and `/v1/log/audit`: NDJSON streams that stay open and deliver every
//! event as it happens (DECISION D1: upstream's streams are silent; ours work).

use crate::api::Ctx;
use crate::api::error::ApiError;
use crate::auth::Authorized;
use crate::http::{EventStream, Response};
use crate::obs::Hub;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

struct Subscription(Receiver<Arc<Vec<u8>>>);

impl EventStream for Subscription {
    fn next(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match self.0.recv_timeout(wait) {
            Ok(line) => Some(line.as_ref().clone()),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }
}

fn stream(hub: &Hub) -> Result<Response, ApiError> {
    let rx = hub.subscribe().map_err(|_| ApiError::Internal("too many log subscribers"))?;
    Ok(Response::stream("application/x-ndjson", Box::new(Subscription(rx))))
}

pub fn handle_get_error_log(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    stream(&ctx.state.obs.errors)
}

pub fn handle_get_audit_log(ctx: &Ctx<'_>, _: &Authorized) -> Result<Response, ApiError> {
    stream(&ctx.state.obs.audit)
}
