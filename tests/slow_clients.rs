//! Clients that send their body too slowly, or too much of it: cut off with
//! 408 or 413, and nothing they sent stays in memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use kwickphone_webhooks::{Secret, Secrets, VerifyWebhookLayer, verify};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{ServiceExt, service_fn};

const SECRET: &str = "whsec_slow_client_test";
/// Guards against a hang only; the checks themselves never depend on time.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn secrets() -> Secrets {
    Secrets::single(Secret::new(SECRET).expect("the test secret is valid"))
}

/// A request body that hands out `chunks` pieces and then never finishes,
/// like a client that stops sending. Every piece it made shares `alive`, so
/// the count of `alive` tells whether any of it is still held.
struct Stalling {
    alive: Arc<()>,
    chunks: usize,
}

impl From<Bytes> for Stalling {
    fn from(_: Bytes) -> Self {
        unreachable!("the layer rebuilds a body only for deliveries it accepts")
    }
}

/// The owner of a chunk's memory; it keeps `alive` counted while it lives.
struct Piece {
    _alive: Arc<()>,
    bytes: Vec<u8>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Body for Stalling {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.chunks == 0 {
            return Poll::Pending;
        }
        self.chunks -= 1;
        let piece = Piece {
            _alive: Arc::clone(&self.alive),
            bytes: vec![b'{'; 1024],
        };
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(piece)))))
    }
}

fn stalling_request(alive: &Arc<()>, chunks: usize) -> Request<Stalling> {
    let body = Stalling {
        alive: Arc::clone(alive),
        chunks,
    };
    Request::post("/hooks/kp")
        .body(body)
        .expect("the request is valid")
}

fn ok_handler() -> impl tower::Service<
    Request<Stalling>,
    Response = http::Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    service_fn(|_: Request<Stalling>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
    })
}

#[tokio::test]
async fn stalled_body_gets_408_and_its_bytes_are_freed() {
    let layer = VerifyWebhookLayer::builder(secrets())
        .body_timeout(Duration::from_millis(200))
        .build()
        .expect("the configuration is valid");
    let alive = Arc::new(());
    let service = tower::Layer::layer(&layer, ok_handler());

    let response = tokio::time::timeout(HANG_GUARD, service.oneshot(stalling_request(&alive, 8)))
        .await
        .expect("the layer answers")
        .expect("the layer answers every delivery itself");

    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    let body = response.into_body().collect().await.expect("in memory");
    let json: serde_json::Value = serde_json::from_slice(&body.to_bytes()).expect("json");
    assert_eq!(json["error"]["code"], "request_timeout");
    assert_eq!(
        Arc::strong_count(&alive),
        1,
        "a chunk or the body is still held"
    );
}

#[tokio::test]
async fn chunked_body_over_the_limit_gets_413_and_is_freed() {
    let layer = VerifyWebhookLayer::builder(secrets())
        .body_limit(4 * 1024)
        .build()
        .expect("the configuration is valid");
    let alive = Arc::new(());
    let service = tower::Layer::layer(&layer, ok_handler());

    // No Content-Length: only counting the bytes can catch it.
    let response = tokio::time::timeout(HANG_GUARD, service.oneshot(stalling_request(&alive, 64)))
        .await
        .expect("the layer answers")
        .expect("the layer answers every delivery itself");

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        Arc::strong_count(&alive),
        1,
        "a chunk or the body is still held"
    );
}

async fn serve(layer: VerifyWebhookLayer) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/hooks/kp", post(|| async { "handled" }))
        .route_layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port is free");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Reads until the server closes the connection, or it resets it.
async fn read_until_closed(stream: &mut tokio::net::tcp::OwnedReadHalf) -> String {
    let mut seen = Vec::new();
    let mut buf = [0; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn trickling_client_over_tcp_is_cut_off_with_408() {
    let layer = VerifyWebhookLayer::builder(secrets())
        .body_timeout(Duration::from_millis(500))
        .build()
        .expect("the configuration is valid");
    let addr = serve(layer).await;
    let body = br#"{"type":"call.completed","number_id":"num_12","call":{"call_sid":"CA1"}}"#;
    let signed = verify::sign(&secrets().lookup("num_12").expect("one secret")[0], 1, body);

    let stream = TcpStream::connect(addr).await.expect("the server listens");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /hooks/kp HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\
         x-kwickphone-timestamp: {}\r\nx-kwickphone-signature: {}\r\n\r\n",
        body.len(),
        signed.timestamp,
        signed.signature,
    );
    writer
        .write_all(head.as_bytes())
        .await
        .expect("headers are sent");

    // One byte every 100 ms: the whole body would take about 7 s.
    let trickle = tokio::spawn(async move {
        for byte in body {
            if writer.write_all(&[*byte]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    });
    let answer = tokio::time::timeout(HANG_GUARD, read_until_closed(&mut reader))
        .await
        .expect("the server answers and closes");

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    let finished = trickle.await.expect("the trickle task ends");
    assert!(
        !finished,
        "the server read the whole slow body instead of cutting it off"
    );
}
