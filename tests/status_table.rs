//! Every row of the contract's status table, over a real loopback socket.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Chunked, NOW, SECRET_12, SECRET_13, Unreachable, body, signed, start, start_with};

#[tokio::test]
async fn handled_then_duplicate_of_done() {
    let server = start().await;
    let payload = body("num_12", "CA-done");

    let first = server.deliver(SECRET_12, &payload).await;
    assert_eq!(first.outcome(), (200, "-"), "{}", first.body);
    assert_eq!(server.app.runs("CA-done"), 1);

    // The vendor's retry is signed anew, later, and serialized differently.
    server.clock.set(NOW + 90);
    let pretty = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&payload).expect("json"),
    )
    .expect("json");
    for retry in [payload.as_str(), pretty.as_str()] {
        let again = server.deliver(SECRET_12, retry).await;
        assert_eq!(again.outcome(), (200, "-"), "{}", again.body);
        let ack: serde_json::Value = serde_json::from_str(&again.body).expect("json ack");
        assert_eq!(ack["duplicate"], true);
    }
    assert_eq!(server.app.runs("CA-done"), 1);
}

#[tokio::test]
async fn same_call_for_another_number_is_not_a_duplicate() {
    let server = start().await;
    for (number, secret) in [("num_12", SECRET_12), ("num_13", SECRET_13)] {
        let reply = server.deliver(secret, &body(number, "CA-shared")).await;
        assert_eq!(reply.outcome(), (200, "-"), "{number}");
    }
    assert_eq!(server.app.runs("CA-shared"), 2);
}

#[tokio::test]
async fn unknown_event_type_is_acknowledged_without_a_dedupe_entry() {
    let server = start().await;
    let unknown = r#"{"type":"call.started","number_id":"num_12","call":{"call_sid":"CA-new"}}"#;

    for _ in 0..2 {
        let reply = server.deliver(SECRET_12, unknown).await;
        assert_eq!(reply.outcome(), (200, "-"), "{}", reply.body);
        let ack: serde_json::Value = serde_json::from_str(&reply.body).expect("json ack");
        assert_eq!(ack["handled"], false);
    }
    assert_eq!(server.app.total_runs(), 0);

    let known = server.deliver(SECRET_12, &body("num_12", "CA-new")).await;
    assert_eq!(known.outcome(), (200, "-"));
    assert_eq!(server.app.runs("CA-new"), 1);
}

#[tokio::test]
async fn vendor_vectors_are_handled_over_the_wire() {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("data/signatures.json")).expect("vector file");
    let server = start().await;
    for v in file["vectors"].as_array().expect("a list") {
        let field = |name: &str| v[name].as_str().expect("string fields").to_owned();
        server
            .clock
            .set(field("timestamp").parse().expect("digits"));
        let headers = [
            ("X-KwickPhone-Timestamp".to_owned(), field("timestamp")),
            ("X-KwickPhone-Signature".to_owned(), field("signature")),
        ];
        let reply = server.send(&headers, field("body")).await;
        assert_eq!(reply.outcome(), (200, "-"), "{}", field("name"));

        let sent: serde_json::Value = serde_json::from_str(&field("body")).expect("json");
        let call_sid = sent["call"]["call_sid"].as_str().expect("call_sid");
        assert_eq!(server.app.runs(call_sid), 1, "{}", field("name"));
        let raw = server
            .app
            .raw_body(call_sid)
            .expect("the handler saw the body");
        assert_eq!(raw, field("body").as_bytes(), "raw bytes reach the handler");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_or_without_a_length() {
    let server = start_with(|b| b.body_limit(4096)).await;
    let mut big = body("num_12", "CA-big");
    big.insert_str(big.len() - 1, &format!(",\"pad\":\"{}\"", "x".repeat(8192)));
    let headers = signed(SECRET_12, NOW, big.as_bytes());

    let declared = server.send(&headers, big.clone()).await;
    assert_eq!(declared.outcome(), (413, "payload_too_large"));

    let chunks = big.as_bytes().chunks(1000).rev();
    let stream = Chunked(chunks.map(Bytes::copy_from_slice).collect());
    let chunked = server.send(&headers, reqwest::Body::wrap(stream)).await;
    assert_eq!(chunked.outcome(), (413, "payload_too_large"));

    // Under the limit, the same chunked path is accepted.
    let small = body("num_12", "CA-small");
    let headers = signed(SECRET_12, NOW, small.as_bytes());
    let stream = Chunked(vec![Bytes::from(small)]);
    let fits = server.send(&headers, reqwest::Body::wrap(stream)).await;
    assert_eq!(fits.outcome(), (200, "-"));
    assert_eq!(server.app.runs("CA-big"), 0);
    assert_eq!(server.app.runs("CA-small"), 1);
}

#[tokio::test]
async fn oversized_stream_is_refused_before_it_ends() {
    let server = start_with(|b| b.body_limit(4096)).await;
    let payload = body("num_12", "CA-endless");
    let headers = signed(SECRET_12, NOW, payload.as_bytes());
    // Over the limit, then the client never finishes the body: the answer
    // must come from the bytes read so far. The timeout only stops a hang.
    let stream = Endless(vec![Bytes::from(vec![b' '; 8192])]);
    let send = server.send(&headers, reqwest::Body::wrap(stream));
    let reply = tokio::time::timeout(Duration::from_secs(30), send)
        .await
        .expect("the receiver answers without waiting for the end");
    assert_eq!(reply.outcome(), (413, "payload_too_large"));
    assert_eq!(server.app.total_runs(), 0);
}

/// A body that sends its chunks and then never ends.
struct Endless(Vec<Bytes>);

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.0.pop() {
            Some(chunk) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk)))),
            None => std::task::Poll::Pending,
        }
    }
}

#[tokio::test]
async fn body_that_stalls_times_out() {
    let server = start_with(|b| b.body_timeout(Duration::from_millis(200))).await;
    let payload = body("num_12", "CA-slow");
    let headers = signed(SECRET_12, NOW, payload.as_bytes());
    let stream = Endless(vec![Bytes::from_static(b"{")]);
    let reply = server.send(&headers, reqwest::Body::wrap(stream)).await;
    assert_eq!(reply.outcome(), (408, "request_timeout"));
    assert_eq!(server.app.total_runs(), 0);
}

#[tokio::test]
async fn default_limit_is_one_mebibyte() {
    let server = start().await;
    let mut big = body("num_12", "CA-mib");
    let pad = 1024 * 1024 - big.len() - ",\"pad\":\"\"".len();
    big.insert_str(big.len() - 1, &format!(",\"pad\":\"{}\"", "x".repeat(pad)));
    assert_eq!(big.len(), 1024 * 1024);
    assert_eq!(server.deliver(SECRET_12, &big).await.outcome(), (200, "-"));

    let over = format!("{big} ");
    let reply = server.deliver(SECRET_12, &over).await;
    assert_eq!(reply.outcome(), (413, "payload_too_large"));
}

#[tokio::test]
async fn compressed_bodies_are_refused() {
    let server = start().await;
    let payload = body("num_12", "CA-gzip");
    for encoding in ["gzip", "br", "deflate"] {
        let mut headers = signed(SECRET_12, NOW, payload.as_bytes());
        headers.push(("content-encoding".into(), encoding.into()));
        let reply = server.send(&headers, payload.clone()).await;
        assert_eq!(reply.outcome(), (415, "unsupported_encoding"), "{encoding}");
    }
    assert_eq!(server.app.total_runs(), 0);
}

#[tokio::test]
async fn timestamps_outside_the_window_are_refused_both_ways() {
    let server = start().await;
    let cases = [
        ("stale", NOW - 301, (401, "timestamp_out_of_tolerance")),
        ("future", NOW + 301, (401, "timestamp_out_of_tolerance")),
        ("epoch", 0, (401, "timestamp_out_of_tolerance")),
        (
            "twelve nines",
            999_999_999_999,
            (401, "timestamp_out_of_tolerance"),
        ),
        ("edge past", NOW - 300, (200, "-")),
        ("edge future", NOW + 300, (200, "-")),
    ];
    for (name, ts, want) in cases {
        let payload = body("num_12", &format!("CA-window-{name}"));
        let headers = signed(SECRET_12, ts, payload.as_bytes());
        let reply = server.send(&headers, payload).await;
        assert_eq!(reply.outcome(), want, "{name}");
    }
    assert_eq!(server.app.total_runs(), 2);
}

#[tokio::test]
async fn unknown_numbers_and_forgeries_are_refused() {
    let server = start().await;
    let forged_hex = format!("v1={}", "a1".repeat(32));
    let own = body("num_12", "CA-forged");
    let cases = [
        (
            "unknown number",
            body("num_99", "CA-99"),
            SECRET_12,
            None,
            "unknown_number",
        ),
        (
            "forged",
            own.clone(),
            SECRET_12,
            Some(forged_hex),
            "invalid_signature",
        ),
        (
            "other number's secret",
            own.clone(),
            SECRET_13,
            None,
            "invalid_signature",
        ),
        (
            "stripped prefix",
            own.clone(),
            &SECRET_12[6..],
            None,
            "invalid_signature",
        ),
    ];
    for (name, payload, secret, signature, code) in cases {
        let mut headers = signed(secret, NOW, payload.as_bytes());
        if let Some(signature) = signature {
            headers[1].1 = signature;
        }
        let reply = server.send(&headers, payload).await;
        assert_eq!(reply.outcome(), (401, code), "{name}");
    }
    assert_eq!(server.app.total_runs(), 0);

    // Forgeries left no dedupe entry behind: the genuine delivery runs.
    let genuine = server.deliver(SECRET_12, &own).await;
    assert_eq!(genuine.outcome(), (200, "-"));
    assert_eq!(server.app.runs("CA-forged"), 1);
}

#[tokio::test]
async fn verified_but_undecodable_bodies_are_bad_requests() {
    let server = start().await;
    let twice = r#"{"type":"call.completed","number_id":"num_13","number_id":"num_12","call":{"call_sid":"CA-x"}}"#;
    let cases: [(&str, &str, &str, (u16, &str)); 9] = [
        (
            "number_id twice",
            twice,
            SECRET_13,
            (400, "invalid_payload"),
        ),
        (
            "malformed json",
            r#"{"type":"call.completed","#,
            SECRET_12,
            (400, "invalid_payload"),
        ),
        ("empty", "", SECRET_12, (400, "invalid_payload")),
        ("not json", "hello", SECRET_13, (400, "invalid_payload")),
        ("array", "[1,2]", SECRET_12, (400, "invalid_payload")),
        (
            "no call_sid",
            r#"{"type":"call.completed","number_id":"num_12","call":{"caller":"x"}}"#,
            SECRET_12,
            (400, "invalid_payload"),
        ),
        (
            "no type",
            r#"{"number_id":"num_12","call":{"call_sid":"CA-x"}}"#,
            SECRET_12,
            (400, "invalid_payload"),
        ),
        (
            "no number_id",
            r#"{"type":"call.completed","call":{"call_sid":"CA-x"}}"#,
            SECRET_12,
            (400, "invalid_payload"),
        ),
        // Signed with a secret the receiver does not know: not verified, so
        // the body is never judged.
        (
            "not json, foreign",
            "hello",
            "whsec_foreign",
            (401, "invalid_signature"),
        ),
    ];
    for (name, payload, secret, want) in cases {
        let headers = signed(secret, NOW, payload.as_bytes());
        let reply = server.send(&headers, payload.to_owned()).await;
        assert_eq!(reply.outcome(), want, "{name}");
    }
    assert_eq!(server.app.total_runs(), 0);
}

#[tokio::test]
async fn unreachable_store_fails_closed() {
    let server = start_with(|b| b.store(Unreachable)).await;
    let reply = server.deliver(SECRET_12, &body("num_12", "CA-503")).await;
    assert_eq!(reply.outcome(), (503, "dedupe_unavailable"));
    assert_eq!(server.app.total_runs(), 0);

    // Checks before the store still answer as usual.
    let forged = server.deliver(SECRET_13, &body("num_12", "CA-503")).await;
    assert_eq!(forged.outcome(), (401, "invalid_signature"));
}

#[tokio::test]
async fn handler_failures_release_the_claim() {
    use common::Action;

    let server = start().await;
    server.app.script("CA-500", vec![Action::Status(500)]);
    server.app.script("CA-panic", vec![Action::Panic]);
    server.app.script("CA-422", vec![Action::Status(422)]);

    let cases = [
        ("CA-500", (500, "-")),
        ("CA-panic", (500, "handler_failed")),
        ("CA-422", (422, "-")),
    ];
    for (call_sid, want) in cases {
        let payload = body("num_12", call_sid);
        let failed = server.deliver(SECRET_12, &payload).await;
        assert_eq!(failed.outcome(), want, "{call_sid}");
        let retry = server.deliver(SECRET_12, &payload).await;
        assert_eq!(retry.outcome(), (200, "-"), "{call_sid} retry");
        let after = server.deliver(SECRET_12, &payload).await;
        assert_eq!(after.outcome(), (200, "-"), "{call_sid} after");
        assert_eq!(server.app.runs(call_sid), 2, "{call_sid}");
    }
    // A non-2xx answer of the handler reaches the vendor as it was.
    server.app.script("CA-body", vec![Action::Status(503)]);
    let passed = server.deliver(SECRET_12, &body("num_12", "CA-body")).await;
    assert_eq!(
        (passed.status, passed.body.as_str()),
        (503, "handler said no")
    );
}

#[tokio::test]
async fn other_methods_are_refused_before_any_claim() {
    let server = start().await;
    let payload = body("num_12", "CA-method");
    let signing: String = signed(SECRET_12, server.clock.secs(), payload.as_bytes())
        .iter()
        .map(|(name, value)| format!("\r\n{name}: {value}"))
        .collect();

    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let head = format!("{method} /hooks/kp HTTP/1.1{signing}");
        let (status, answer) = server.send_raw(&head, payload.as_bytes()).await;
        assert_eq!(status, 405, "{method}: {answer}");
        assert!(answer.contains("method_not_allowed"), "{method}: {answer}");
    }
    assert_eq!(server.app.total_runs(), 0);

    let post = server.deliver(SECRET_12, &payload).await;
    assert_eq!(post.outcome(), (200, "-"), "{}", post.body);
    assert_eq!(server.app.runs("CA-method"), 1);
}
