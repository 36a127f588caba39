//! A busy metrics port: whose is it? When the holder is another process of this same
//! program, the error says so, since that is the multi-process trap (only one of them is
//! ever scraped).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use crate::Error;

/// The error for a listener that could not bind: when the port is taken by another
/// process of this same program, say so, since that is the multi-process trap (only one
/// of them is ever scraped).
pub(super) fn bind_error(addr: SocketAddr, source: std::io::Error) -> Error {
    if source.kind() == std::io::ErrorKind::AddrInUse
        && let Some((program, pid)) = probe_exporter(addr)
        && program == super::program_name()
    {
        return Error::PortHeldBySibling { addr, pid, program };
    }
    Error::Bind { addr, source }
}

/// Who serves `addr`, if it is this crate's exporter: its program name and process id,
/// from its `GET /` page. Bounded to a few hundred milliseconds.
fn probe_exporter(addr: SocketAddr) -> Option<(String, u32)> {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    };
    let timeout = Duration::from_millis(300);
    let mut stream = TcpStream::connect_timeout(&target, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut reply = Vec::new();
    // A stranger may send anything, or nothing: read at most a few KiB.
    let _ = stream.take(4096).read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    let body = reply.split_once("\r\n\r\n")?.1;
    if !body.starts_with("tonic-metrics exporter") {
        return None;
    }
    let field = |name: &str| body.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
    Some((field("program:")?.to_owned(), field("pid:")?.parse().ok()?))
}
