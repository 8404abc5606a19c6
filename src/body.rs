//! Reading the request body within its limits, and the response body type.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use pin_project_lite::pin_project;

use crate::error::RejectionKind;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Refuses a declared `Content-Length` over `limit` before reading anything.
pub(crate) fn check_declared_length(
    headers: &HeaderMap,
    limit: usize,
) -> Result<(), RejectionKind> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => Err(RejectionKind::PayloadTooLarge),
        _ => Ok(()),
    }
}

/// Refuses any `Content-Encoding` but identity: a decompressing layer would
/// change the bytes that were signed.
pub(crate) fn check_encoding(headers: &HeaderMap) -> Result<(), RejectionKind> {
    let identity = |v: &http::HeaderValue| {
        let text = v.to_str().unwrap_or("?").trim();
        text.is_empty() || text.eq_ignore_ascii_case("identity")
    };
    if headers.get_all(CONTENT_ENCODING).iter().all(identity) {
        Ok(())
    } else {
        Err(RejectionKind::UnsupportedEncoding)
    }
}

/// Reads the whole body, at most `limit` bytes, within `timeout`, whether it
/// declares a length or comes chunked.
pub(crate) async fn read<B>(
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, RejectionKind>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut collect = pin!(Limited::new(body, limit).collect());
    // A body that has arrived whole is read in one poll; only one that is
    // still on its way needs the timer, whose setup reads the clock.
    let first = poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match first {
        Poll::Ready(collected) => Ok(collected),
        Poll::Pending => tokio::time::timeout(timeout, collect).await,
    };
    match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<LengthLimitError>() => Err(RejectionKind::PayloadTooLarge),
        Ok(Err(_)) => Err(RejectionKind::BodyUnreadable),
        Err(_) => Err(RejectionKind::BodyTimeout),
    }
}

pin_project! {
    /// The response body of [`VerifyWebhook`](crate::VerifyWebhook): the
    /// inner service's body, or one the layer wrote itself.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Own { #[pin] body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        let kind = Kind::Inner { body };
        Self { kind }
    }

    pub(crate) fn own(body: Full<Bytes>) -> Self {
        let kind = Kind::Own { body };
        Self { kind }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Own { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Own { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Own { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn declared_length() {
        let cases = [
            ("absent", headers(&[]), Ok(())),
            ("at limit", headers(&[("content-length", "10")]), Ok(())),
            (
                "over",
                headers(&[("content-length", "11")]),
                Err(RejectionKind::PayloadTooLarge),
            ),
            (
                "huge",
                headers(&[("content-length", "99999999999999999999")]),
                Ok(()),
            ),
        ];
        for (name, map, want) in cases {
            assert_eq!(check_declared_length(&map, 10), want, "{name}");
        }
    }

    #[test]
    fn encodings() {
        let cases = [
            ("absent", headers(&[]), Ok(())),
            (
                "identity",
                headers(&[("content-encoding", "Identity")]),
                Ok(()),
            ),
            (
                "gzip",
                headers(&[("content-encoding", "gzip")]),
                Err(RejectionKind::UnsupportedEncoding),
            ),
            (
                "second line",
                headers(&[("content-encoding", "identity"), ("content-encoding", "br")]),
                Err(RejectionKind::UnsupportedEncoding),
            ),
        ];
        for (name, map, want) in cases {
            assert_eq!(check_encoding(&map), want, "{name}");
        }
    }

    #[tokio::test]
    async fn limits_apply_to_the_bytes_read() {
        let small = Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(
            read(small, 10, Duration::from_secs(1)).await,
            Ok(Bytes::from_static(b"0123456789"))
        );
        let large = Full::new(Bytes::from_static(b"0123456789!"));
        assert_eq!(
            read(large, 10, Duration::from_secs(1)).await,
            Err(RejectionKind::PayloadTooLarge)
        );
    }
}
