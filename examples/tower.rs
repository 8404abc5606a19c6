//! The layer in a plain tower + hyper stack, without axum's `Router`.
//!
//! ```text
//! cargo run --example tower
//! ```
//!
//! Serves one connection at a time on a loopback port, delivers a signed
//! event and a forged one to itself, prints both answers and exits.

#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use kwickphone_webhooks::{Delivery, Event, Secret, Secrets, VerifyWebhookLayer, testing};
use tokio::net::{TcpListener, TcpStream};
use tower::{BoxError, ServiceBuilder};

/// The inner service: any tower service that takes the verified request.
async fn handle(request: Request<Body>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(delivery) = request.extensions().get::<Delivery>() else {
        return Ok(status(StatusCode::INTERNAL_SERVER_ERROR));
    };
    if let Event::CallCompleted(event) = delivery.event() {
        println!(
            "handler: {} took call {}",
            event.number_id, event.call.call_sid
        );
    }
    Ok(status(StatusCode::OK))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = code;
    response
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let secret = Secret::new("whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6")?;
    let service = ServiceBuilder::new()
        // The layer rebuilds the request from the verified bytes, so it needs
        // a body type that can be made from `Bytes`.
        .map_request(|request: Request<Incoming>| request.map(Body::new))
        .layer(VerifyWebhookLayer::new(Secrets::single(secret.clone())))
        .service_fn(handle);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(service.clone());
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::spawn(connection);
        }
    });

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let body = testing::call_completed_body("num_12", "CA0001");
    let signed: Request<Full<Bytes>> =
        testing::signed_request("/hooks/kp", &secret, now, body.as_bytes());
    println!("signed delivery: {}", send(address, signed).await?);

    let mut forged: Request<Full<Bytes>> =
        testing::signed_request("/hooks/kp", &secret, now, body.as_bytes());
    forged.headers_mut().insert(
        "x-kwickphone-signature",
        format!("v1={}", "0".repeat(64)).parse()?,
    );
    println!("forged delivery: {}", send(address, forged).await?);
    Ok(())
}

async fn send(
    address: std::net::SocketAddr,
    request: Request<Full<Bytes>>,
) -> Result<String, BoxError> {
    let stream = TcpStream::connect(address).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let code = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(format!("{code} {}", String::from_utf8_lossy(&body)))
}
