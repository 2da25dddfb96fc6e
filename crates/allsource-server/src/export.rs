//! Exports: every event matching a query's filters as one Parquet file
//! (`GET /api/v1/export/parquet`) or one Arrow IPC stream (`GET /api/v1/export/arrow`),
//! streamed to the client as it is written.
//!
//! The engine's [`EventStore::export`] is synchronous and writes to a [`Write`]; it runs
//! on a blocking thread with a [`ChannelWriter`] that cuts what it writes into chunks
//! of [`CHUNK_BYTES`] and sends them over a bounded channel to the response body
//! ([`ChunkStream`]). So at most [`CHANNEL_CHUNKS`] chunks wait for a slow client (the
//! export waits for it), and a client that goes away stops the export: the body is
//! dropped, the next send fails, the engine returns an error, nothing panics.
//!
//! The response starts only once the export has written its first chunk, so a failure
//! before any byte (bad filters are checked even earlier, before the export starts) is
//! still a JSON error. A failure after that cannot change the status any more: the
//! body ends with an error, which aborts the response (no terminating chunk), so the
//! client sees a truncated transfer, never a short file that looks whole. The body
//! ends cleanly only after the export said it finished.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use allsource_core::{Error, EventStore, ExportFormat, Query, QueryEventsRequest};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use futures_core::Stream;
use tokio::sync::mpsc;

use crate::error::AppError;
use crate::extract::{ExportQuery, ARROW_STREAM};
use crate::handlers::Store;

/// The page size the export reads the log with (the engine's `limit`): an Arrow IPC
/// export holds one record batch per page.
pub const EXPORT_PAGE_SIZE: usize = 4096;

/// The size of the chunks sent to the client (the last one may be smaller).
pub const CHUNK_BYTES: usize = 64 * 1024;

/// How many chunks may wait for the client before the export waits too.
pub const CHANNEL_CHUNKS: usize = 16;

/// The media type of a Parquet file.
pub const PARQUET: &str = "application/vnd.apache.parquet";

/// What both export endpoints do, for their OpenAPI descriptions.
const EXPORT_DESCRIPTION: &str = "Every event matching the filters (all of them without any), in position \
    order, from the log as committed when the export starts; streamed in chunks. A failure after the first \
    bytes aborts the transfer (no clean end), so a short file never looks complete. `limit` is refused: \
    bound an export with `after`, `since`/`until` or `as_of`.";

/// `GET /api/v1/export/parquet`
#[utoipa::path(
    get,
    path = "/api/v1/export/parquet",
    tag = "export",
    summary = "Export matching events as one Parquet file",
    description = EXPORT_DESCRIPTION,
    params(crate::openapi::EventFilters),
    responses(
        (status = 200, description = "A zstd-compressed Parquet file in the events' columnar schema.",
            content_type = "application/vnd.apache.parquet", body = crate::openapi::schema::Binary,
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"allsource-events.parquet\"`"))),
        (status = 400, description = "`ValidationError`: a bad, unknown (`limit` too) or repeated parameter.",
            body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn export_parquet(
    State(store): Store,
    ExportQuery(request): ExportQuery,
) -> Result<Response, AppError> {
    export(store, request, ExportFormat::Parquet).await
}

/// `GET /api/v1/export/arrow`
#[utoipa::path(
    get,
    path = "/api/v1/export/arrow",
    tag = "export",
    summary = "Export matching events as one Arrow IPC stream",
    description = EXPORT_DESCRIPTION,
    params(crate::openapi::EventFilters),
    responses(
        (status = 200, description = "An Arrow IPC stream, one record batch per 4,096 events.",
            content_type = "application/vnd.apache.arrow.stream", body = crate::openapi::schema::Binary,
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"allsource-events.arrows\"`"))),
        (status = 400, description = "`ValidationError`: a bad, unknown (`limit` too) or repeated parameter.",
            body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn export_arrow(
    State(store): Store,
    ExportQuery(request): ExportQuery,
) -> Result<Response, AppError> {
    export(store, request, ExportFormat::ArrowIpc).await
}

async fn export(
    store: Arc<EventStore>,
    mut request: QueryEventsRequest,
    format: ExportFormat,
) -> Result<Response, AppError> {
    request.limit = Some(EXPORT_PAGE_SIZE);
    // Bad filters: a JSON 400 before the export starts.
    Query::try_from(request.clone())?;

    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    let span = tracing::Span::current();
    let task = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        run_export(&store, request, format, tx)
    });
    let first = match rx.recv().await {
        Some(chunk) => chunk,
        // The export ended without sending anything: it failed before its first byte
        // (a successful export always sends at least its end).
        None => {
            return Err(match task.await {
                Ok(Err(error)) => error.into(),
                Ok(Ok(_)) => Error::Internal("the export ended without any output".into()).into(),
                Err(error) => Error::Internal(format!("the export task failed: {error}")).into(),
            })
        }
    };
    // From here on the task runs detached: it logs its own outcome.
    drop(task);

    let (content_type, file_name) = match format {
        ExportFormat::Parquet => (PARQUET, "allsource-events.parquet"),
        ExportFormat::ArrowIpc => (ARROW_STREAM, "allsource-events.arrows"),
    };
    let disposition = format!("attachment; filename=\"{file_name}\"");
    let body = Body::from_stream(ChunkStream { first: Some(first), rx, ended: false });
    Ok(([(CONTENT_TYPE, content_type.to_string()), (CONTENT_DISPOSITION, disposition)], body).into_response())
}

/// The export on a blocking thread: writes it into `tx`, then logs how it went. An
/// error before any byte was sent is left to the handler to answer (and log).
fn run_export(
    store: &EventStore,
    request: QueryEventsRequest,
    format: ExportFormat,
    tx: mpsc::Sender<Chunk>,
) -> Result<u64, Error> {
    let started = Instant::now();
    let mut writer = ChannelWriter::new(tx);
    let result = store.export(request, format, &mut writer).and_then(|events| {
        writer.finish().map_err(|e| Error::Internal(format!("export: {e}")))?;
        Ok(events)
    });
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let bytes = writer.bytes_sent;
    match &result {
        Ok(events) => tracing::info!(?format, events, bytes, elapsed_ms, "export finished"),
        Err(_) if writer.client_gone => {
            tracing::info!(?format, bytes, elapsed_ms, "export stopped: the client went away");
        }
        Err(error) if bytes > 0 => {
            tracing::error!(?format, %error, bytes, elapsed_ms, "export failed after its response started");
        }
        Err(_) => {}
    }
    result
}

/// What the export sends to the response body.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// The next bytes.
    Data(Bytes),
    /// The export finished: the body may end.
    Done,
}

/// A [`Write`] that sends what is written as chunks of [`CHUNK_BYTES`] over a bounded
/// channel, waiting (it runs on a blocking thread) while the channel is full.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buffer: Vec<u8>,
    /// Bytes sent so far.
    bytes_sent: u64,
    /// The receiving end is gone: the client went away.
    client_gone: bool,
}

impl ChannelWriter {
    pub(crate) fn new(tx: mpsc::Sender<Chunk>) -> ChannelWriter {
        ChannelWriter { tx, buffer: Vec::with_capacity(CHUNK_BYTES), bytes_sent: 0, client_gone: false }
    }

    /// Sends what is buffered, then the end.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.send_buffer()?;
        self.send(Chunk::Done)
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        let length = data.len() as u64;
        self.send(Chunk::Data(Bytes::from(data)))?;
        self.bytes_sent += length;
        Ok(())
    }

    fn send(&mut self, chunk: Chunk) -> io::Result<()> {
        if self.tx.blocking_send(chunk).is_err() {
            self.client_gone = true;
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"));
        }
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let n = data.len().min(CHUNK_BYTES - self.buffer.len());
            self.buffer.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buffer.len() == CHUNK_BYTES {
                self.send_buffer()?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// The response body: the chunks of the channel, ending cleanly only on
/// [`Chunk::Done`]; a channel closed before it (the export failed or panicked) ends
/// the body with an error.
pub(crate) struct ChunkStream {
    first: Option<Chunk>,
    rx: mpsc::Receiver<Chunk>,
    ended: bool,
}

impl Stream for ChunkStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let chunk = match self.first.take() {
            Some(chunk) => chunk,
            None => match ready!(self.rx.poll_recv(cx)) {
                Some(chunk) => chunk,
                None => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(io::Error::other(
                        "the export stopped before its end (the server's log says why)",
                    ))));
                }
            },
        };
        match chunk {
            Chunk::Data(bytes) => Poll::Ready(Some(Ok(bytes))),
            Chunk::Done => {
                self.ended = true;
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn next(stream: &mut ChunkStream) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
    }

    #[test]
    fn writer_cuts_chunks_and_ends_with_done() {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut writer = ChannelWriter::new(tx);
        let data: Vec<u8> = (0..(3 * CHUNK_BYTES + 17)).map(|i| (i % 251) as u8).collect();
        writer.write_all(&data[..10]).unwrap();
        writer.write_all(&data[10..]).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let mut received = Vec::new();
        let mut done = false;
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Chunk::Data(bytes) => {
                    assert!(!done, "data after Done");
                    assert!(!bytes.is_empty() && bytes.len() <= CHUNK_BYTES, "{}", bytes.len());
                    received.extend_from_slice(&bytes);
                }
                Chunk::Done => done = true,
            }
        }
        assert!(done);
        assert_eq!(received, data);
    }

    #[test]
    fn writer_fails_once_the_receiver_is_gone() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut writer = ChannelWriter::new(tx);
        let error = writer.write_all(&vec![0u8; CHUNK_BYTES]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        assert!(writer.client_gone);
    }

    #[tokio::test]
    async fn stream_ends_cleanly_only_after_done() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Chunk::Data(Bytes::from_static(b"b"))).await.unwrap();
        tx.send(Chunk::Done).await.unwrap();
        let mut stream = ChunkStream { first: Some(Chunk::Data(Bytes::from_static(b"a"))), rx, ended: false };
        assert_eq!(next(&mut stream).await.unwrap().unwrap(), "a");
        assert_eq!(next(&mut stream).await.unwrap().unwrap(), "b");
        assert!(next(&mut stream).await.is_none());
        assert!(next(&mut stream).await.is_none());

        let (tx, rx) = mpsc::channel(4);
        tx.send(Chunk::Data(Bytes::from_static(b"b"))).await.unwrap();
        drop(tx);
        let mut stream = ChunkStream { first: Some(Chunk::Data(Bytes::from_static(b"a"))), rx, ended: false };
        assert_eq!(next(&mut stream).await.unwrap().unwrap(), "a");
        assert_eq!(next(&mut stream).await.unwrap().unwrap(), "b");
        assert!(next(&mut stream).await.unwrap().is_err(), "a cut-off export must not end cleanly");
        assert!(next(&mut stream).await.is_none());
    }
}
