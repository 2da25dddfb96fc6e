//! Serving over TLS with rustls (its `ring` crypto provider): the certificate chain
//! and key from PEM files ([`server_config`]), and a [`TlsListener`] that
//! `axum::serve` takes in place of a `TcpListener`, so the server, its graceful
//! shutdown included, is the same with and without TLS.
//!
//! Handshakes run on tasks of their own, at most [`HANDSHAKES_MAX`] at a time and each
//! within [`HANDSHAKE_TIMEOUT`], so a client that connects and says nothing holds up
//! no one. A failed handshake (plain HTTP on the TLS port, an unknown certificate
//! authority on the client's side) closes that connection and is logged at `debug`.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{crypto, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes may be under way at once; past that, accepting waits.
pub const HANDSHAKES_MAX: usize = 256;

/// The connections whose handshake is done, waiting for the server to take them.
const READY_CONNECTIONS_MAX: usize = 64;

/// A certificate or key that could not be loaded, or that rustls refused.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The rustls server configuration for the certificate chain in `cert_path` (PEM, the
/// server's certificate first) and the private key in `key_path` (PEM: PKCS#8, PKCS#1
/// or SEC1). TLS 1.2 and 1.3; ALPN offers HTTP/1.1, the protocol the server speaks.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = std::fs::read(cert_path)
        .map_err(|e| TlsError(format!("could not read the TLS certificate {}: {e}", cert_path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("bad PEM in the TLS certificate {}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("no certificate in {}", cert_path.display())));
    }
    let key_pem = std::fs::read(key_path)
        .map_err(|e| TlsError(format!("could not read the TLS key {}: {e}", key_path.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError(format!("no usable private key in {}: {e}", key_path.display())))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS set-up failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError(format!(
                "the TLS certificate {} and key {} do not make a usable pair: {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that hands `axum::serve` connections whose TLS handshake is done.
///
/// A task accepts TCP connections and runs their handshakes; it stops, closing the
/// socket, when the listener is dropped (at shutdown).
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Serves TLS with `config` on the connections `listener` accepts. Must be called
    /// within a Tokio runtime.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_CONNECTIONS_MAX);
        tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), ready_tx));
        Ok(TlsListener { ready, local_addr })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended, which it only does once this listener is gone:
            // no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let permit = tokio::select! {
            permit = handshakes.clone().acquire_owned() => permit,
            () = ready.closed() => return,
        };
        let Ok(permit) = permit else { return };
        // axum's accept for a `TcpListener` retries (and logs) failures.
        let (stream, remote_addr) = tokio::select! {
            connection = Listener::accept(&mut listener) => connection,
            () = ready.closed() => return,
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    drop(permit);
                    // Fails only when the server is shutting down: the connection closes.
                    let _ = ready.send((tls_stream, remote_addr)).await;
                }
                Ok(Err(error)) => tracing::debug!(%remote_addr, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%remote_addr, "TLS handshake timed out"),
            }
        });
    }
}
