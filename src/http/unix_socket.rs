//! HTTP over a Unix domain socket, for `VAULT_ADDR=unix:///path/to.sock`:
//! the listener of a Vault Agent or Proxy (or `bao agent`/`bao proxy`) in
//! the same pod. Vault's Go client accepts these addresses and sends plain
//! HTTP over the socket; so do we.
//!
//! ureq needs a host in the URL: requests go to `http://localhost/...`, a
//! resolver that never asks DNS answers for it, and the connector dials the
//! socket whatever the URL says.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

/// The URL requests are sent to when the address is a socket.
pub const BASE_URL: &str = "http://localhost";

/// Dials the socket for every connection.
#[derive(Debug)]
pub struct UnixConnector {
    pub path: PathBuf,
}

impl<In: Transport> Connector<In> for UnixConnector {
    type Out = UnixTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let limit = details.timeout.not_zero().map(|t| *t);
        let stream = connect_within(&self.path, limit).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => ureq::Error::Timeout(details.timeout.reason),
            kind => ureq::Error::Io(io::Error::new(
                kind,
                format!("connect to {}: {e}", self.path.display()),
            )),
        })?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(UnixTransport { stream, buffers }))
    }
}

/// Connects to the socket within `limit`. A blocking connect(2) to a
/// listener whose accept queue is full (a stalled agent) waits for ever:
/// no deadline or retry would end it. A non-blocking one fails with
/// `EAGAIN` instead and cannot be waited on with poll(2), so it is tried
/// again every 10 ms until the limit.
fn connect_within(path: &Path, limit: Option<Duration>) -> io::Result<UnixStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(path)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let until = limit.map(|l| crate::time::instant_after(Instant::now(), l));
    loop {
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) if until.is_none_or(|u| Instant::now() < u) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(Errno::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the listener accepts no connection (its queue is full)",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[derive(Debug)]
pub struct UnixTransport {
    stream: UnixStream,
    buffers: LazyBuffers,
}

/// Maps an I/O timeout to ureq's timeout error, as its TCP transport does.
fn io_error(e: io::Error, timeout: NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ureq::Error::Timeout(timeout.reason),
        _ => ureq::Error::Io(e),
    }
}

impl Transport for UnixTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.stream
            .set_write_timeout(timeout.not_zero().map(|t| *t))
            .map_err(ureq::Error::Io)?;
        let output = &self.buffers.output()[..amount];
        self.stream
            .write_all(output)
            .map_err(|e| io_error(e, timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        self.stream
            .set_read_timeout(timeout.not_zero().map(|t| *t))
            .map_err(ureq::Error::Io)?;
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match self.stream.read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other.map_err(|e| io_error(e, timeout))?,
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        // A pooled connection is reused only if the peer has not closed it
        // and sent nothing unasked: a non-blocking read must find nothing.
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let open = matches!(
            self.stream.read(&mut [0u8]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        );
        open && self.stream.set_nonblocking(false).is_ok()
    }
}

/// Answers every name with a placeholder address without asking DNS: the
/// connector ignores it, and `localhost` must not leave the machine as a query.
#[derive(Debug)]
pub struct NoResolver;

impl Resolver for NoResolver {
    fn resolve(
        &self,
        _uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)));
        Ok(addrs)
    }
}
