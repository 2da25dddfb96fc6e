//! A time limit on writes to every accepted connection, so a client that stops reading
//! cannot hold its connection (and whatever the response holds, such as a subscriber
//! slot) forever.
//!
//! [`WriteTimeoutListener`] wraps the listener `axum::serve` takes (a `TcpListener` or
//! a [`TlsListener`](crate::tls::TlsListener)) and puts each accepted connection in a
//! [`TimeoutWriter`]: once a write or flush to the socket has waited
//! [`WriteTimeoutListener::timeout`] without taking a byte, it fails with
//! [`TimedOut`](std::io::ErrorKind::TimedOut), hyper drops the connection and the
//! response's body with it. Every write that takes bytes starts the count again, so a
//! slow client that keeps reading a large export is never cut; reads and idle
//! connections (nothing to write) are not limited.

use std::pin::Pin;
use std::time::Duration;

use axum::serve::Listener;
use tokio_io_timeout::TimeoutWriter;

/// The default time a write may wait for a client that does not read.
pub const WRITE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// The longest write timeout accepted: a day (longer is as good as none, and every
/// platform's clock can hold the deadline).
pub const WRITE_TIMEOUT_MAX: Duration = Duration::from_secs(24 * 60 * 60);

const _: () = assert!(WRITE_TIMEOUT_DEFAULT.as_millis() <= WRITE_TIMEOUT_MAX.as_millis());

/// A listener whose connections fail a write that makes no progress for
/// [`timeout`](Self::timeout).
///
/// ```no_run
/// use std::time::Duration;
/// use allsource_server::write_timeout::WriteTimeoutListener;
///
/// # async fn serve(app: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let listener = WriteTimeoutListener::new(listener, Duration::from_secs(30));
/// axum::serve(listener, app).await
/// # }
/// ```
#[derive(Debug)]
pub struct WriteTimeoutListener<L> {
    inner: L,
    timeout: Duration,
}

impl<L: Listener> WriteTimeoutListener<L> {
    /// Limits each write to the connections `inner` accepts to `timeout` without
    /// progress.
    pub fn new(inner: L, timeout: Duration) -> WriteTimeoutListener<L> {
        WriteTimeoutListener { inner, timeout }
    }

    /// How long a write may make no progress before its connection is closed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<L: Listener> Listener for WriteTimeoutListener<L> {
    // Boxed: the writer holds a timer, which must stay pinned, and the server wants
    // an `Unpin` connection.
    type Io = Pin<Box<TimeoutWriter<L::Io>>>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        let mut io = TimeoutWriter::new(io);
        io.set_timeout(Some(self.timeout));
        (Box::pin(io), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Instant;

    use tokio::io::AsyncWrite;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn write<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> std::io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, bytes)).await
    }

    /// Writes to a peer that never reads fail within about the timeout; writes to a
    /// peer that reads, however long in all, do not.
    #[tokio::test]
    async fn a_write_without_progress_fails_and_a_slow_reader_is_served() {
        let timeout = Duration::from_millis(500);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut listener = WriteTimeoutListener::new(listener, timeout);
        let addr = listener.local_addr().unwrap();
        assert_eq!(listener.timeout(), timeout);

        // Never reads: the socket buffers fill, then the write waits and fails.
        let _stalled = TcpStream::connect(addr).await.unwrap();
        let (mut io, _) = listener.accept().await;
        let chunk = vec![b'x'; 64 * 1024];
        let started = Instant::now();
        let mut written = 0usize;
        let error = loop {
            match write(&mut io, &chunk).await {
                Ok(n) => written += n,
                Err(error) => break error,
            }
            assert!(written < 1 << 30, "1 GiB written to a client that does not read");
        };
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
        assert!(started.elapsed() >= timeout, "failed after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(20), "failed after {:?}", started.elapsed());

        // Reads slowly, at most 64 KiB a millisecond, while the server writes for three
        // times the timeout. (The kernel wakes a blocked writer only once a third of its
        // send buffer is free, which takes this reader well under the timeout.)
        let reader = TcpStream::connect(addr).await.unwrap();
        let (mut io, _) = listener.accept().await;
        let read = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut n_read = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                reader.readable().await.unwrap();
                match reader.try_read(&mut buf) {
                    Ok(0) => return n_read,
                    Ok(n) => n_read += n,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(error) => panic!("{error}"),
                }
            }
        });
        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < 3 * timeout {
            sent += write(&mut io, &chunk).await.unwrap();
        }
        poll_fn(|cx| io.as_mut().poll_shutdown(cx)).await.unwrap();
        assert_eq!(read.await.unwrap(), sent);
        assert!(sent > written, "the slow reader took only {sent} bytes");
    }
}
