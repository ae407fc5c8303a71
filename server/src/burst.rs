//! [`BurstReader`]: big reads without a big idle buffer.
//!
//! tungstenite reads at most its configured read-buffer size per call, and allocates that
//! buffer up front for every connection. A small size keeps idle connections cheap but
//! turns one 16 KiB message into 32 syscalls; a large one costs every idle connection
//! that much memory. This wrapper sits between: a small ask is served from a burst buffer
//! filled by one large read, and that buffer exists only while bytes are waiting — it is
//! freed as soon as it is drained. (tokio's `BufReader` would keep its buffer forever.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read syscall takes in.
const BURST: usize = 16 << 10;

/// A stream whose reads are gathered into bursts; writes pass straight through.
pub(crate) struct BurstReader<S> {
    inner: S,
    /// Bytes read but not yet handed out; empty (unallocated) when idle.
    pending: BytesMut,
}

impl<S> BurstReader<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            pending: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BurstReader<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            if out.remaining() >= BURST {
                // A big ask needs no help.
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.pending.reserve(BURST);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.pending) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => {
                    this.pending = BytesMut::new();
                    return Poll::Ready(Err(err));
                }
                Poll::Pending => {
                    // Nothing arrived: do not hold the burst buffer while waiting.
                    this.pending = BytesMut::new();
                    return Poll::Pending;
                }
            }
        }
        let n = this.pending.len().min(out.remaining());
        out.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        if this.pending.is_empty() {
            // Drained: give the memory back (0 bytes read, i.e. EOF, lands here too).
            this.pending = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BurstReader<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn small_reads_are_served_from_one_burst_and_nothing_is_lost() {
        let (mut writer, reader) = tokio::io::duplex(64 << 10);
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        writer.write_all(&data).await.unwrap();
        drop(writer);
        let mut reader = BurstReader::new(reader);
        let mut got = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let n = reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, data);
        assert_eq!(
            reader.pending.capacity(),
            0,
            "the burst buffer is freed once drained"
        );
    }

    #[tokio::test]
    async fn an_idle_reader_holds_no_buffer() {
        let (_writer, reader) = tokio::io::duplex(1024);
        let mut reader = BurstReader::new(reader);
        let mut chunk = [0u8; 16];
        let read = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            reader.read(&mut chunk),
        )
        .await;
        assert!(read.is_err(), "nothing to read");
        assert_eq!(reader.pending.capacity(), 0);
    }
}
