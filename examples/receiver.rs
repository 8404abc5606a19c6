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
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use kwickphone_webhooks::{CallCompleted, ConfigError, Secret, Secrets, VerifyWebhookLayer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing_subscriber::EnvFilter;

const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// How long a connection may take to send a request's headers, and how long
/// an idle keep-alive connection stays open. The layer's body timeout starts
/// only once the headers are in; this closes the gap before it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long any connection may stay open. The vendor sends one small request
/// and waits for the answer; a client that never reads its answers would
/// otherwise hold its connection for ever.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// How many connections are served at once. Each may buffer a body up to the
/// layer's limit before its signature is checked, so this bounds that
/// memory (here 256 MiB) and keeps file descriptors for new deliveries;
/// further clients wait in the listen queue.
const MAX_CONNECTIONS: usize = 256;

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
    let listener = match TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("receiver: cannot listen on {listen}: {err}");
            return ExitCode::from(1);
        }
    };

    let app = Router::new()
        .route("/hooks/kp", post(on_call_completed))
        .route_layer(VerifyWebhookLayer::new(secrets))
        .with_state(Printer::start());
    tracing::info!(address = %listen, "receiver listening");
    serve(listener, app).await;
    ExitCode::SUCCESS
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

/// Serves HTTP/1 connections, at most [`MAX_CONNECTIONS`] at once, closing
/// those that are too slow to send their headers, sit idle or outlive
/// [`CONNECTION_LIFETIME`].
async fn serve(listener: TcpListener, app: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, usually: wait for some to close.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(slot);
        });
    }
}

/// Prints the event; a failed write answers 500, so the vendor retries it.
async fn on_call_completed(
    State(printer): State<Printer>,
    event: CallCompleted,
) -> Result<&'static str, StatusCode> {
    let line = serde_json::json!({
        "type": "call.completed",
        "number_id": event.number_id,
        "call_sid": event.call.call_sid,
        "caller": event.call.caller,
        "outcome": event.call.outcome.as_ref().map(|o| o.as_str()),
        "duration_sec": event.call.duration_sec,
    });
    match printer.print(line.to_string()).await {
        Ok(()) => Ok("ok"),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

type Line = (String, oneshot::Sender<std::io::Result<()>>);

/// Writes event lines to stdout from a thread of its own: a reader of stdout
/// that falls behind holds up only the handlers waiting for their line, never
/// the server's worker threads, so leases keep being renewed meanwhile.
#[derive(Clone)]
struct Printer {
    lines: mpsc::Sender<Line>,
}

impl Printer {
    fn start() -> Self {
        let (lines, mut queue) = mpsc::channel::<Line>(1024);
        std::thread::spawn(move || {
            let mut stdout = std::io::stdout();
            while let Some((line, written)) = queue.blocking_recv() {
                let result = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
                let _ = written.send(result);
            }
        });
        Self { lines }
    }

    /// Returns once the line is written and flushed.
    async fn print(&self, line: String) -> std::io::Result<()> {
        let (written, done) = oneshot::channel();
        let gone = || std::io::Error::other("stdout writer stopped");
        self.lines.send((line, written)).await.map_err(|_| gone())?;
        done.await.map_err(|_| gone())?
    }
}
