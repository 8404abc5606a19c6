//! The example receiver: serves `POST /hooks/kp` and prints one JSON line on
//! stdout for each event its handler receives. Logs go to stderr.
//!
//! ```text
//! KWICKPHONE_WEBHOOK_SECRETS=num_12=whsec_a,num_13=whsec_b cargo run --example receiver
//! ```
//!
//! Environment:
//!
//! - `KWICKPHONE_LISTEN`: address to listen on, default `127.0.0.1:3000`;
//! - `KWICKPHONE_WEBHOOK_SECRETS`: `number_id=secret` pairs separated by
//!   commas; a number named twice keeps both secrets (rotation);
//! - `KWICKPHONE_WEBHOOK_SECRET`: one secret for every number, used when the
//!   list above is absent;
//! - `RUST_LOG`: log filter for stderr, default `info`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use kwickphone_webhooks::{CallCompleted, ConfigError, Secret, Secrets, VerifyWebhookLayer};
use tracing_subscriber::EnvFilter;

const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let secrets = match secrets_from_env() {
        Ok(secrets) => secrets,
        Err(message) => {
            eprintln!("receiver: {message}");
            return ExitCode::from(2);
        }
    };
    let listen = std::env::var("KWICKPHONE_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.into());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("receiver: cannot listen on {listen}: {err}");
            return ExitCode::from(1);
        }
    };

    let app = Router::new()
        .route("/hooks/kp", post(on_call_completed))
        .route_layer(VerifyWebhookLayer::new(secrets));
    tracing::info!(address = %listen, "receiver listening");
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("receiver: server failed: {err}");
            ExitCode::from(1)
        }
    }
}

fn secrets_from_env() -> Result<Secrets, String> {
    let describe = |err: ConfigError| err.to_string();
    if let Ok(list) = std::env::var("KWICKPHONE_WEBHOOK_SECRETS") {
        return Secrets::parse_list(&list).map_err(describe);
    }
    if let Ok(secret) = std::env::var("KWICKPHONE_WEBHOOK_SECRET") {
        return Secret::new(secret).map(Secrets::single).map_err(describe);
    }
    Err("set KWICKPHONE_WEBHOOK_SECRETS=num_12=whsec_...,... or KWICKPHONE_WEBHOOK_SECRET".into())
}

/// Prints the event; a failed write answers 500, so the vendor retries it.
async fn on_call_completed(event: CallCompleted) -> Result<&'static str, StatusCode> {
    let line = serde_json::json!({
        "type": "call.completed",
        "number_id": event.number_id,
        "call_sid": event.call.call_sid,
        "caller": event.call.caller,
        "outcome": event.call.outcome.as_ref().map(|o| o.as_str()),
        "duration_sec": event.call.duration_sec,
    });
    // One whole line per event, even when several handlers run at once.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map(|()| "ok")
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}
