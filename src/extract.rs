//! Axum extractors for verified deliveries, and their rejection.
//!
//! They read the [`Delivery`] that [`VerifyWebhook`](crate::VerifyWebhook)
//! left in the request's extensions, so they work only on routes behind the
//! layer; elsewhere they answer 500 `layer_missing`.

use std::fmt;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::delivery::Delivery;
use crate::error::{ACK_UNHANDLED, Rejection, RejectionKind, json_response};
use crate::event::{CallCompleted, Event};

/// Why an extractor could not produce its value.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExtractRejection {
    /// The route is not behind the layer.
    LayerMissing,
    /// The delivery is a verified event of another type. It is answered 200,
    /// so the vendor does not retry an event this handler does not take.
    OtherEventType,
}

impl fmt::Display for ExtractRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LayerMissing => f.write_str(RejectionKind::LayerMissing.message()),
            Self::OtherEventType => f.write_str("the event is of another type"),
        }
    }
}

impl std::error::Error for ExtractRejection {}

impl IntoResponse for ExtractRejection {
    fn into_response(self) -> Response {
        match self {
            Self::LayerMissing => Rejection::new(RejectionKind::LayerMissing).into_response(),
            Self::OtherEventType => json_response(StatusCode::OK, ACK_UNHANDLED).into_response(),
        }
    }
}

fn delivery(parts: &Parts) -> Result<&Delivery, ExtractRejection> {
    parts
        .extensions
        .get::<Delivery>()
        .ok_or(ExtractRejection::LayerMissing)
}

impl<S: Send + Sync> FromRequestParts<S> for Delivery {
    type Rejection = ExtractRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        delivery(parts).cloned()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Event {
    type Rejection = ExtractRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        delivery(parts).map(|d| d.event().clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallCompleted {
    type Rejection = ExtractRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match delivery(parts)?.event() {
            Event::CallCompleted(event) => Ok(event.clone()),
            _ => Err(ExtractRejection::OtherEventType),
        }
    }
}
