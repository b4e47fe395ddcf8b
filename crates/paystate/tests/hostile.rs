//! Hostile clients over real TCP against `serve` (header and body timeouts of 2 s for the test), while a
//! well-behaved sender keeps delivering signed webhooks, each of which must be answered 200:
//! slowloris (headers trickled a byte at a time), a body slower than the timeout, 10,000 idle
//! connections, oversized headers, a huge `Content-Length` with no body, a chunked body over the limit,
//! pipelined requests and malformed HTTP. Each gets its status, or a closed connection, within a bound.
//! The sender's latencies are printed (p50, p99, max): performance is measured here, not asserted.

mod common;

use common::Server;
use paystate_stripe::WebhookSecret;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_hostile_test_secret";
/// How long past its timeout (2 s) a hostile connection may last.
const BOUND: Duration = Duration::from_secs(8);

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(BOUND + Duration::from_secs(4))).expect("timeout");
    s
}

/// Reads until the server closes or the read times out; the bytes and how long it took.
fn answer(s: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

fn status(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends signed webhooks one after the other until `stop`; their latencies.
fn sender(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let secret = WebhookSecret::new(SECRET).expect("secret");
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').map(|(h, p)| (h.to_owned(), format!("/{p}"))).expect("url");
        let mut latencies = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
            let body = format!(
                r#"{{"id":"evt_hostile_{i}","object":"event","type":"payment_intent.created","created":{now},"livemode":false,"api_version":"2025-10-29.clover","data":{{"object":{{"id":"pi_hostile_{i}","object":"payment_intent","amount":1000,"currency":"usd","status":"requires_payment_method","metadata":{{}}}}}}}}"#
            );
            let sig = secret.header(i64::try_from(now).expect("now"), body.as_bytes());
            let start = Instant::now();
            let mut s = connect(&host);
            write!(
                s,
                "POST {path} HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\nstripe-signature: {sig}\r\ncontent-length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("send");
            let (text, took) = answer(&mut s);
            assert_eq!(status(&text), Some(200), "the well-behaved sender, webhook {i} after {took:?}: {text:?}");
            latencies.push(start.elapsed());
        }
        latencies
    })
}

#[test]
fn hostile_clients_get_timeouts_and_refusals_while_webhooks_are_served() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = Server::spawn(
        common::serve_command(&dir.path().join("data"), SECRET)
            .args(["--header-timeout-secs", "2", "--body-timeout-secs", "2"])
            .env("RUST_LOG", "error")
            .stderr(Stdio::null()),
    );
    let addr = server.public.trim_start_matches("http://").trim_end_matches("/webhooks/stripe").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let well_behaved = sender(server.public.clone(), Arc::clone(&stop));

    // 10,000 idle connections: each is closed by the server once its headers are late.
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..10_000).map(|_| connect(&addr)).collect();
    let opened = started.elapsed();
    // Slowloris: a request line, then a header one byte at a time, one every 500 ms.
    let slowloris = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut s = connect(&addr);
            let start = Instant::now();
            let _ = s.write_all(b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n");
            for b in b"x-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
                if s.write_all(&[*b]).is_err() {
                    break; // closed by the server
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let (text, _) = answer(&mut s);
            (text, start.elapsed())
        }
    });
    // A body slower than the timeout: 10 bytes of 100, one a second.
    let slow_body = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut s = connect(&addr);
            let start = Instant::now();
            let _ = s.write_all(
                b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
            );
            for _ in 0..10 {
                if s.write_all(b" ").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            let (text, _) = answer(&mut s);
            (text, start.elapsed())
        }
    });

    // Each of these at once, answered or closed within the bound.
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("oversized headers", {
            let mut r = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nx-big: ".to_vec();
            r.extend(std::iter::repeat_n(b'a', 1 << 20));
            r.extend_from_slice(b"\r\n\r\n");
            r
        }, &[431, 400]),
        (
            "a huge Content-Length with no body",
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000000\r\n\r\n"
                .to_vec(),
            &[413],
        ),
        ("a chunked body over the limit", {
            let mut r = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..20 {
                r.extend_from_slice(b"10000\r\n");
                r.extend(std::iter::repeat_n(b' ', 0x10000));
                r.extend_from_slice(b"\r\n");
            }
            r
        }, &[413]),
        ("malformed HTTP", b"GARBAGE \x00\x01 NOT HTTP\r\n\r\n".to_vec(), &[400]),
        ("a bad header line", b"POST /webhooks/stripe HTTP/1.1\r\nno colon here\r\n\r\n".to_vec(), &[400]),
    ];
    for (what, request, want) in &cases {
        let mut s = connect(&addr);
        let start = Instant::now();
        let _ = s.write_all(request); // the server may close before it has read all of it
        let (text, _) = answer(&mut s);
        let took = start.elapsed();
        assert!(took < BOUND, "{what}: {took:?}");
        let got = status(&text);
        assert!(got.is_none_or(|c| want.contains(&c)), "{what}: answered {got:?}, wanted one of {want:?}: {text:.200}");
        eprintln!("{what}: {} in {took:?}", got.map_or("closed".to_owned(), |c| c.to_string()));
    }
    // Pipelined: two requests in one write, two answers in order.
    let mut s = connect(&addr);
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let (text, _) = answer(&mut s);
    let first = text.find("HTTP/1.1 200").expect("the first answer");
    let second = text.find("HTTP/1.1 404").expect("the second answer");
    assert!(first < second, "{text}");

    let (text, took) = slowloris.join().expect("slowloris");
    assert!(took < BOUND, "slowloris lasted {took:?}");
    assert!(status(&text).is_none_or(|c| c == 408), "slowloris: {text}");
    let (text, took) = slow_body.join().expect("slow body");
    assert!(took < BOUND, "the slow body lasted {took:?}");
    assert_eq!(status(&text), Some(408), "the slow body: {text}");

    // Every idle connection was closed by the server (reading gives end of file), within the bound.
    let mut closed = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
        let mut b = [0u8; 64];
        if matches!(s.read(&mut b), Ok(0)) || matches!(s.read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    let idle_done = started.elapsed();
    assert_eq!(closed, idle.len(), "idle connections the server closed (after {idle_done:?})");
    drop(idle);

    stop.store(true, Ordering::Relaxed);
    let mut latencies = well_behaved.join().expect("the well-behaved sender");
    assert!(latencies.len() >= 20, "the sender was served throughout: {}", latencies.len());
    latencies.sort();
    let q = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    eprintln!(
        "10,000 idle connections opened in {opened:?}, all closed by the server; well-behaved sender: {} webhooks, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        q(0.5),
        q(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    assert!(server.terminate().success());
}
