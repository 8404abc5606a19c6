//! Signing headers as they really arrive: missing, malformed, repeated, in
//! odd letter case; byte-order marks; secret rotation while serving.

mod common;

use common::{NOW, SECRET_12, body, secret, signed, start};

const TS: &str = "x-kwickphone-timestamp";
const SIG: &str = "x-kwickphone-signature";

fn line(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

#[tokio::test]
async fn missing_or_malformed_headers_are_401() {
    let server = start().await;
    let payload = body("num_12", "CA-headers");
    let good = signed(SECRET_12, NOW, payload.as_bytes());
    let (ts, sig) = (good[0].1.as_str(), good[1].1.as_str());
    let long_ts = format!("{NOW}000");
    let plus_ts = format!("+{NOW}");
    let spaced_sig = format!("v1 = {}", &sig[3..]);

    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("no timestamp", vec![line(SIG, sig)]),
        ("no signature", vec![line(TS, ts)]),
        ("no headers", vec![]),
        (
            "two timestamp lines",
            vec![line(TS, ts), line(TS, ts), line(SIG, sig)],
        ),
        ("thirteen digits", vec![line(TS, &long_ts), line(SIG, sig)]),
        ("plus sign", vec![line(TS, &plus_ts), line(SIG, sig)]),
        ("plus sign, short", vec![line(TS, "+123"), line(SIG, sig)]),
        (
            "fraction",
            vec![line(TS, &format!("{NOW}.0")), line(SIG, sig)],
        ),
        ("empty timestamp", vec![line(TS, ""), line(SIG, sig)]),
        ("only v0", vec![line(TS, ts), line(SIG, "v0=")]),
        (
            "only v0 with hex",
            vec![line(TS, ts), line(SIG, &format!("v0={}", &sig[3..]))],
        ),
        ("empty signature", vec![line(TS, ts), line(SIG, "")]),
        ("short hex", vec![line(TS, ts), line(SIG, &sig[..40])]),
        ("spaces inside", vec![line(TS, ts), line(SIG, &spaced_sig)]),
        ("no scheme", vec![line(TS, ts), line(SIG, &sig[3..])]),
    ];
    for (name, headers) in cases {
        let reply = server.send(&headers, payload.clone()).await;
        assert_eq!(reply.outcome(), (401, "invalid_signature"), "{name}");
    }
    assert_eq!(server.app.total_runs(), 0);

    let reply = server.send(&good, payload).await;
    assert_eq!(reply.outcome(), (200, "-"), "the good headers pass");
}

#[tokio::test]
async fn several_signature_lines_form_one_list() {
    let server = start().await;
    let cases = [
        (
            "good on a later line",
            vec!["v0=abc", "v1=00, v2=ff", "{good}"],
        ),
        ("good after junk in one line", vec!["v1=zz , {good} ,v9=1"]),
        ("upper-case hex", vec!["{GOOD}"]),
        ("padded with spaces", vec!["   {good}   "]),
    ];
    for (n, (name, lines)) in cases.into_iter().enumerate() {
        let payload = body("num_12", &format!("CA-lines-{n}"));
        let good = signed(SECRET_12, NOW, payload.as_bytes());
        let upper = format!("v1={}", good[1].1[3..].to_uppercase());
        let mut headers = vec![good[0].clone()];
        for l in lines {
            let value = l.replace("{good}", &good[1].1).replace("{GOOD}", &upper);
            headers.push(line(SIG, &value));
        }
        let reply = server.send(&headers, payload).await;
        assert_eq!(reply.outcome(), (200, "-"), "{name}");
    }
    assert_eq!(server.app.total_runs(), 4);
}

#[tokio::test]
async fn header_names_match_in_any_letter_case() {
    let server = start().await;
    let cases = [
        ("X-KwickPhone-Timestamp", "X-KwickPhone-Signature"),
        ("x-KWICKPHONE-timestamp", "X-kWiCkPhOnE-SiGnAtUrE"),
        ("X-KWICKPHONE-TIMESTAMP", "x-kwickphone-signature"),
    ];
    for (n, (ts_name, sig_name)) in cases.into_iter().enumerate() {
        let payload = body("num_12", &format!("CA-case-{n}"));
        let good = signed(SECRET_12, NOW, payload.as_bytes());
        let head = format!(
            "POST /hooks/kp HTTP/1.1\r\n{ts_name}: {}\r\n{sig_name}: {}",
            good[0].1, good[1].1
        );
        let (status, answer) = server.send_raw(&head, payload.as_bytes()).await;
        assert_eq!(status, 200, "{ts_name} / {sig_name}: {answer}");
    }
    assert_eq!(server.app.total_runs(), 3);

    // The same header twice, in two spellings, is still two lines.
    let payload = body("num_12", "CA-case-twice");
    let good = signed(SECRET_12, NOW, payload.as_bytes());
    let head = format!(
        "POST /hooks/kp HTTP/1.1\r\nX-KwickPhone-Timestamp: {0}\r\nx-kwickphone-timestamp: {0}\r\n\
         X-KwickPhone-Signature: {1}",
        good[0].1, good[1].1
    );
    let (status, answer) = server.send_raw(&head, payload.as_bytes()).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("invalid_signature"), "{answer}");
    assert_eq!(server.app.total_runs(), 3);
}

#[tokio::test]
async fn content_type_is_not_required() {
    let server = start().await;
    let payload = body("num_12", "CA-ctype");
    for (n, ctype) in ["text/plain", "application/x-www-form-urlencoded"]
        .iter()
        .enumerate()
    {
        let mut headers = signed(SECRET_12, NOW, payload.as_bytes());
        headers.push(line("content-type", ctype));
        let reply = server.send(&headers, payload.clone()).await;
        assert_eq!(reply.outcome(), (200, "-"), "{ctype}");
        assert_eq!(server.app.runs("CA-ctype"), 1, "after {n}");
    }
    let (status, _) = {
        let good = signed(SECRET_12, NOW, body("num_12", "CA-none").as_bytes());
        let head = format!(
            "POST /hooks/kp HTTP/1.1\r\n{TS}: {}\r\n{SIG}: {}",
            good[0].1, good[1].1
        );
        server
            .send_raw(&head, body("num_12", "CA-none").as_bytes())
            .await
    };
    assert_eq!(status, 200, "no content type at all");
}

#[tokio::test]
async fn byte_order_mark_is_verified_and_kept_but_skipped_for_parsing() {
    let server = start().await;
    let payload = format!("\u{feff}{}", body("num_12", "CA-bom"));
    let reply = server.deliver(SECRET_12, &payload).await;
    assert_eq!(reply.outcome(), (200, "-"), "{}", reply.body);
    let raw = server.app.raw_body("CA-bom").expect("the handler ran");
    assert_eq!(
        raw,
        payload.as_bytes(),
        "the handler sees the bytes as signed"
    );

    // Signed without the mark but sent with it: the bytes differ.
    let bare = body("num_12", "CA-bom-2");
    let headers = signed(SECRET_12, NOW, bare.as_bytes());
    let reply = server.send(&headers, format!("\u{feff}{bare}")).await;
    assert_eq!(reply.outcome(), (401, "invalid_signature"));
}

#[tokio::test]
async fn rotation_accepts_both_secrets_until_one_is_retired() {
    const NEXT: &str = "whsec_rotated0000000000000000000000";
    let server = start().await;
    server.secrets.add("num_12", secret(NEXT));

    let cases = [
        ("old", SECRET_12, "CA-rot-old"),
        ("new", NEXT, "CA-rot-new"),
    ];
    for (name, key, call_sid) in cases {
        let reply = server.deliver(key, &body("num_12", call_sid)).await;
        assert_eq!(reply.outcome(), (200, "-"), "{name} during the changeover");
    }

    server.secrets.retire("num_12", &secret(SECRET_12));
    let retired = server.deliver(SECRET_12, &body("num_12", "CA-rot-2")).await;
    assert_eq!(retired.outcome(), (401, "invalid_signature"));
    let current = server.deliver(NEXT, &body("num_12", "CA-rot-2")).await;
    assert_eq!(current.outcome(), (200, "-"));

    // A done event stays done, but a retired secret still cannot replay it.
    let replay = server
        .deliver(SECRET_12, &body("num_12", "CA-rot-old"))
        .await;
    assert_eq!(replay.outcome(), (401, "invalid_signature"));

    server.secrets.retire("num_12", &secret(NEXT));
    let gone = server.deliver(NEXT, &body("num_12", "CA-rot-3")).await;
    assert_eq!(gone.outcome(), (401, "unknown_number"));
    assert_eq!(server.app.total_runs(), 3);
}
