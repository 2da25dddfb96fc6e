//! TLS through the real binary: a self-signed certificate made by the test (rcgen), the
//! server started with `--tls-cert`/`--tls-key`, and a blocking rustls client that
//! trusts exactly that certificate. Plain HTTP on the TLS port gets no answer, a
//! client that does not trust the certificate gets no connection, and bad TLS flags
//! stop the start-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{read_reply, request_bytes, send_raw, spawn, Server, IO_TIMEOUT};
use common::{assert_error, event, Reply, Req};
use serde_json::{json, Value};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{crypto, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const WAIT: Duration = Duration::from_secs(20);

/// A self-signed certificate for `localhost`, written as PEM files in a temporary
/// directory.
struct Certificate {
    _dir: tempfile::TempDir,
    cert_path: PathBuf,
    key_path: PathBuf,
    der: CertificateDer<'static>,
}

fn self_signed() -> Certificate {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    Certificate { _dir: dir, cert_path, key_path, der: certified.cert.der().clone() }
}

/// A client that trusts `roots` only.
fn client_config(roots: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    Arc::new(config)
}

/// Sends `req` over a new TLS connection to `localhost` at `addr`.
fn send_tls(config: &Arc<ClientConfig>, addr: SocketAddr, req: &Req) -> std::io::Result<Reply> {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let connection = ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap())
        .map_err(io_error)?;
    let mut stream = StreamOwned::new(connection, tcp);
    stream.write_all(&request_bytes(addr, req))?;
    stream.flush()?;
    read_reply(&mut stream)
}

fn io_error(error: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(error)
}

fn start_tls(certificate: &Certificate, extra: &[&str]) -> Server {
    let mut args = vec![
        "--addr",
        "127.0.0.1:0",
        "--in-memory",
        "--tls-cert",
        certificate.cert_path.to_str().unwrap(),
        "--tls-key",
        certificate.key_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let server = Server::try_attach_unchecked(spawn(&args, &[]))
        .unwrap_or_else(|(status, log)| panic!("the TLS server exited ({status:?}): {log}"));
    assert!(server.startup_log.iter().any(|line| line.contains("tls=true")), "{:#?}", server.startup_log);
    server
}

fn json_of(reply: &Reply, status: u16) -> Value {
    assert_eq!(reply.status, status, "{}", reply.text());
    reply.json()
}

#[test]
fn serves_https_with_the_given_certificate() {
    let certificate = self_signed();
    let server = start_tls(&certificate, &[]);
    let client = client_config(&[&certificate.der]);

    // Polls until the server answers over TLS (it already logged its address).
    let deadline = Instant::now() + WAIT;
    let health = loop {
        match send_tls(&client, server.addr, &Req::get("/health")) {
            Ok(reply) => break reply,
            Err(error) => assert!(Instant::now() < deadline, "no TLS answer: {error}"),
        }
        std::thread::yield_now();
    };
    assert_eq!(json_of(&health, 200)["status"], "ok");

    let append = Req::post_json("/api/v1/events", &event("tls-entity", "t", json!({"over": "tls"})));
    let stored = json_of(&send_tls(&client, server.addr, &append).unwrap(), 201);
    let query = Req::get("/api/v1/events/query?entity_id=tls-entity");
    let page = json_of(&send_tls(&client, server.addr, &query).unwrap(), 200);
    assert_eq!(page["events"], json!([stored]));

    // Plain HTTP on the TLS port: no HTTP answer, the connection just ends.
    let plain = send_raw(server.addr, &request_bytes(server.addr, &Req::get("/health")));
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");

    // A client that trusts another certificate does not connect.
    let stranger = self_signed();
    let untrusting = client_config(&[&stranger.der]);
    let refused = send_tls(&untrusting, server.addr, &Req::get("/health"));
    let error = refused.expect_err("connected without trusting the certificate").to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    // The server serves on after both, and stops cleanly on SIGTERM.
    json_of(&send_tls(&client, server.addr, &Req::get("/health")).unwrap(), 200);
    server.signal("TERM");
    assert!(server.wait_exit(WAIT).success());
}

#[test]
fn keys_over_tls() {
    let certificate = self_signed();
    let server = start_tls(&certificate, &["--api-key", "tls-writer-key:write"]);
    let client = client_config(&[&certificate.der]);
    let deadline = Instant::now() + WAIT;
    while send_tls(&client, server.addr, &Req::get("/health")).is_err() {
        assert!(Instant::now() < deadline, "no TLS answer");
        std::thread::yield_now();
    }
    let append = Req::post_json("/api/v1/events", &event("e", "t", json!({})));
    let reply = send_tls(&client, server.addr, &append).unwrap();
    assert_error(&reply, 401, "Unauthorized", "no key over TLS");
    let append = append.header("authorization", "Bearer tls-writer-key");
    json_of(&send_tls(&client, server.addr, &append).unwrap(), 201);
}

/// A TLS connection to `localhost` at `addr` whose request was sent and whose reply
/// head was read, byte by byte (so no more of the body is read); and the status.
fn open_tls(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    req: &Req,
) -> (u16, StreamOwned<ClientConnection, TcpStream>) {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let connection =
        ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut stream = StreamOwned::new(connection, tcp);
    stream.write_all(&request_bytes(addr, req)).unwrap();
    stream.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head:?}"));
    (status, stream)
}

/// Over TLS too, a client that opens a stream and then never reads loses its
/// connection once writes to it make no progress for `--write-timeout-ms`, and its
/// subscriber slot with it, while appends go on.
#[test]
fn a_client_that_stops_reading_is_cut_off_over_tls() {
    let certificate = self_signed();
    let server = start_tls(&certificate, &common::STALLED_CLIENT_FLAGS);
    let client = client_config(&[&certificate.der]);
    let deadline = Instant::now() + WAIT;
    while send_tls(&client, server.addr, &Req::get("/health")).is_err() {
        assert!(Instant::now() < deadline, "no TLS answer");
        std::thread::yield_now();
    }
    let subscribers = || {
        let reply = send_tls(&client, server.addr, &Req::get("/metrics")).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        common::subscribers_open(&reply.text())
    };
    let stream = Req::get("/api/v1/events/stream");
    let (status, mut stalled) = open_tls(&client, server.addr, &stream);
    assert_eq!(status, 200);
    assert_eq!(subscribers(), 1);

    // 30 MB of events.
    for events in common::padded_batches(40, 25, 30_000) {
        let append = Req::post_json("/api/v1/events/batch", &json!({ "events": events }));
        json_of(&send_tls(&client, server.addr, &append).unwrap(), 201);
    }

    let deadline = Instant::now() + WAIT;
    while subscribers() != 0 {
        assert!(Instant::now() < deadline, "the stalled TLS connection was not closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _next) = open_tls(&client, server.addr, &stream);
    assert_eq!(status, 200, "the slot was not given back");

    // The stalled client reads what the kernel held, then the connection ends (without
    // TLS's close_notify, as a cut connection does), never with the response's end.
    let mut rest = Vec::new();
    if let Err(error) = stalled.read_to_end(&mut rest) {
        let kinds = [std::io::ErrorKind::UnexpectedEof, std::io::ErrorKind::ConnectionReset];
        assert!(kinds.contains(&error.kind()), "the connection did not end: {error}");
    }
    assert!(!rest.ends_with(b"\r\n0\r\n\r\n"), "the response ended whole: the connection was not cut");
}

fn start_failure(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["--addr", "127.0.0.1:0", "--in-memory"];
    all.extend_from_slice(args);
    match Server::try_attach_unchecked(spawn(&all, &[])) {
        Ok(_) => panic!("the server started with {args:?}"),
        Err((status, log)) => (status.code(), log),
    }
}

#[test]
fn bad_tls_flags_stop_the_start() {
    let certificate = self_signed();
    let cert = certificate.cert_path.to_str().unwrap();
    let key = certificate.key_path.to_str().unwrap();

    // One without the other: clap's usage error.
    let (code, log) = start_failure(&["--tls-cert", cert]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("--tls-key"), "{log}");
    let (code, log) = start_failure(&["--tls-key", key]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("--tls-cert"), "{log}");

    // A missing file, a file without a certificate, a key that does not match.
    let missing = Path::new(cert).with_file_name("missing.pem");
    let (code, log) = start_failure(&["--tls-cert", missing.to_str().unwrap(), "--tls-key", key]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("could not read the TLS certificate"), "{log}");
    let (code, log) = start_failure(&["--tls-cert", key, "--tls-key", key]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("no certificate in"), "{log}");
    let other = self_signed();
    let (code, log) = start_failure(&["--tls-cert", cert, "--tls-key", other.key_path.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("do not make a usable pair"), "{log}");
}
