//! What keeps clients from holding the listeners' sockets hostage: a cap on open connections
//! per listener, a deadline for a new gRPC connection's HTTP/2 preface, and the process's open
//! file limit raised to what it may use. (HTTP/2 keepalive, the stream cap and the admin
//! port's header deadline are hyper's own, set in `app` and `admin`.)
//!
//! The work is per connection: a semaphore permit and a timer at accept, one branch per read
//! until the preface is in. Nothing here runs per Check.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The listeners' limits (`serve` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// Open gRPC connections at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Open admin connections at once.
    pub admin_max_connections: usize,
    /// How long a new gRPC connection may take to send its HTTP/2 preface, and an admin
    /// request its headers.
    pub header_read_timeout: Duration,
    /// Checks in flight on one gRPC connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// An HTTP/2 PING goes to a gRPC peer that has sent nothing for this long...
    pub keepalive_interval: Duration,
    /// ...and the connection is closed when its ACK is not back within this.
    pub keepalive_timeout: Duration,
}

impl ConnectionOptions {
    /// For the start-up line.
    pub fn summary(&self) -> String {
        format!(
            "max_connections={} admin_max_connections={} header_read_timeout={:?} \
             max_concurrent_streams={} keepalive={:?}+{:?}",
            self.max_connections,
            self.admin_max_connections,
            self.header_read_timeout,
            self.max_concurrent_streams,
            self.keepalive_interval,
            self.keepalive_timeout,
        )
    }

    /// Lowers the caps so that connections can never take the descriptors the database pool,
    /// Redis and the process itself need (`reserved`) out of `open_files`. Returns whether
    /// anything was lowered.
    pub fn fit_open_files(&mut self, open_files: u64, reserved: u64) -> bool {
        let usable = usize::try_from(open_files.saturating_sub(reserved)).unwrap_or(usize::MAX);
        let (grpc, admin) = (self.max_connections, self.admin_max_connections);
        // The admin port needs a handful (probes, a scraper); the rest is Envoy's.
        self.admin_max_connections = admin.min(usable / 16).max(1);
        self.max_connections = grpc
            .min(usable.saturating_sub(self.admin_max_connections))
            .max(1);
        (grpc, admin) != (self.max_connections, self.admin_max_connections)
    }
}

/// The open file limit as found and as left: (soft before, soft now, hard).
#[derive(Debug, Clone, Copy)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft open file limit to the hard one. Many systems start services with a
/// soft limit of 1024, far below both the hard limit and what a gate under a connection
/// flood needs.
pub fn raise_open_files_limit() -> io::Result<OpenFiles> {
    let (before, hard) = rlimit::Resource::NOFILE.get()?;
    let now = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(OpenFiles { before, now, hard })
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    listener: &'static str,
}

/// Connection counts per listener (`grpc`, `admin`), shared with the metrics registry.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: Family<ListenerLabels, Gauge>,
    pub refused: Family<ListenerLabels, Counter>,
}

/// Admits connections to one listener while it has a free slot.
pub struct Admission {
    slots: Arc<Semaphore>,
    open: Gauge,
    refused: Counter,
}

impl Admission {
    pub fn new(listener: &'static str, capacity: usize, stats: &ConnectionStats) -> Self {
        let labels = ListenerLabels { listener };
        Self {
            slots: Arc::new(Semaphore::new(capacity.min(Semaphore::MAX_PERMITS))),
            open: stats.open.get_or_create(&labels).clone(),
            refused: stats.refused.get_or_create(&labels).clone(),
        }
    }

    /// The next connection with a free slot. One over the cap is closed at once rather than
    /// left in the accept queue: its client learns now, and may try another replica.
    pub async fn accept(&self, listener: &TcpListener) -> (TcpStream, Slot) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    pause_after(&error).await;
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    self.open.inc();
                    let slot = Slot {
                        _permit: permit,
                        open: self.open.clone(),
                    };
                    return (stream, slot);
                }
                Err(_) => {
                    self.refused.inc();
                    tracing::debug!("connection over the cap closed");
                }
            }
        }
    }
}

/// After a failed accept: a peer that gave up is nothing, but out of descriptors (`EMFILE`)
/// the next accept would fail the same way at once, so wait for some to be closed.
async fn pause_after(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::error!(%error, "cannot accept a connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection's place under its listener's cap, given back when the connection closes.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// gRPC connections under the cap, each with its preface deadline, for tonic's server.
pub fn grpc_incoming(
    listener: TcpListener,
    admission: Admission,
    preface_timeout: Duration,
) -> impl Stream<Item = Result<Connection, io::Error>> {
    futures_util::stream::unfold(
        (listener, admission),
        move |(listener, admission)| async move {
            let (stream, slot) = admission.accept(&listener).await;
            // Nagle off, as tonic does for listeners it binds itself: with it on, a small
            // answer could wait 40 ms for the delayed ACK of the previous one.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY");
            }
            let connection = Connection {
                stream,
                preface: Some(Preface::new(preface_timeout)),
                _slot: slot,
            };
            Some((Ok(connection), (listener, admission)))
        },
    )
}

/// An accepted connection holding its slot; a gRPC one fails its reads once its preface
/// deadline passes with the preface incomplete, and the server then closes it.
pub struct Connection {
    stream: TcpStream,
    preface: Option<Preface>,
    _slot: Slot,
}

impl Connection {
    /// An admin connection: hyper bounds its header reads itself.
    pub fn admin(stream: TcpStream, slot: Slot) -> Self {
        Self {
            stream,
            preface: None,
            _slot: slot,
        }
    }
}

/// The client's HTTP/2 connection preface as it arrives: the 24-byte magic, then one frame
/// (SETTINGS, RFC 9113 3.4) whose 9-byte header gives its length.
struct Preface {
    deadline: Pin<Box<Sleep>>,
    received: usize,
    frame_length: [u8; 3],
}

const MAGIC: usize = 24;
const FRAME_HEADER: usize = 9;

impl Preface {
    fn new(timeout: Duration) -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep(timeout)),
            received: 0,
            frame_length: [0; 3],
        }
    }

    /// Takes the next bytes read; true once the whole preface is in.
    fn received(&mut self, bytes: &[u8]) -> bool {
        let start = self.received;
        let end = start + bytes.len();
        // The bytes of this read at offsets 24..27 of the connection: the frame's length.
        let (from, to) = (MAGIC.max(start), (MAGIC + 3).min(end));
        if from < to {
            self.frame_length[from - MAGIC..to - MAGIC]
                .copy_from_slice(&bytes[from - start..to - start]);
        }
        self.received = end;
        let [a, b, c] = self.frame_length;
        let frame = u32::from_be_bytes([0, a, b, c]) as usize;
        end >= MAGIC + FRAME_HEADER + frame
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn preface_timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no HTTP/2 preface in time")
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(preface) = &mut this.preface else {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        };
        let filled = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if preface.received(&buf.filled()[filled..]) {
                    this.preface = None;
                }
                Poll::Ready(Ok(()))
            }
            // The deadline's timer wakes the connection, so a silent client is noticed here.
            Poll::Pending if preface.expired(cx) => Poll::Ready(Err(preface_timed_out())),
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            // A client that reads nothing either, before its preface.
            Poll::Pending if this.preface.as_mut().is_some_and(|p| p.expired(cx)) => {
                Poll::Ready(Err(preface_timed_out()))
            }
            other => other,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC_BYTES: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn settings(payload: usize) -> Vec<u8> {
        let mut frame = (payload as u32).to_be_bytes()[1..].to_vec();
        frame.extend([0x4, 0, 0, 0, 0, 0]);
        frame.extend(std::iter::repeat_n(0, payload));
        frame
    }

    #[tokio::test]
    async fn the_preface_is_the_magic_and_a_whole_first_frame_however_it_is_split() {
        let preface = [MAGIC_BYTES.to_vec(), settings(300)].concat();
        let whole = preface.len();
        for split in [1, 2, 7, 24, 25, 26, 27, 33, whole - 1] {
            let mut counting = Preface::new(Duration::from_secs(1));
            assert!(!counting.received(&preface[..split]), "split at {split}");
            assert!(counting.received(&preface[split..]), "split at {split}");
        }
        let mut bytewise = Preface::new(Duration::from_secs(1));
        let done = preface
            .iter()
            .map(|b| bytewise.received(&[*b]))
            .collect::<Vec<_>>();
        assert_eq!(done.iter().position(|d| *d), Some(whole - 1));

        let mut empty_settings = Preface::new(Duration::from_secs(1));
        assert!(!empty_settings.received(MAGIC_BYTES));
        assert!(empty_settings.received(&settings(0)));
    }

    #[test]
    fn caps_fit_the_open_file_limit() {
        let options = ConnectionOptions {
            max_connections: 4096,
            admin_max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1024,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
        };
        let mut plenty = options.clone();
        assert!(!plenty.fit_open_files(1 << 20, 100));
        assert_eq!(plenty, options);

        let mut tight = options.clone();
        assert!(tight.fit_open_files(1024, 100));
        assert_eq!(
            (tight.max_connections, tight.admin_max_connections),
            (924 - 57, 57)
        );

        let mut none_left = options.clone();
        assert!(none_left.fit_open_files(50, 100));
        assert_eq!(
            (none_left.max_connections, none_left.admin_max_connections),
            (1, 1)
        );
    }
}
