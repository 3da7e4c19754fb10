//! Transport-level faults. `hang` and `slow` live in `Shared::fault_gate`;
//! this file holds what `stream-cut` needs: a connection that can be broken
//! from inside an RPC, so the client sees the transport fail mid-stream
//! instead of a gRPC status.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Lets a handler break the connection its request came on. tonic puts it in
/// every request's extensions (it is the connection's `ConnectInfo`).
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnectionHandle {
    cut: Arc<AtomicBool>,
}

impl ConnectionHandle {
    /// From now on every read or write on the connection fails, so hyper
    /// drops it without sending any more frames (no trailers, no status).
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

/// An accepted TCP connection that `ConnectionHandle::cut` can break.
pub(crate) struct CuttableConnection {
    tcp: TcpStream,
    handle: ConnectionHandle,
}

impl CuttableConnection {
    pub(crate) fn new(tcp: TcpStream) -> CuttableConnection {
        CuttableConnection { tcp, handle: ConnectionHandle::default() }
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection cut by the stream-cut defect")
}

impl tonic::transport::server::Connected for CuttableConnection {
    type ConnectInfo = ConnectionHandle;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.handle.clone()
    }
}

impl AsyncRead for CuttableConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.handle.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.handle.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.handle.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
