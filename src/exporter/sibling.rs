//! A busy metrics port: whose is it? When the holder is another process of this same
//! program, the error says so, since that is the multi-process trap (only one of them is
//! ever scraped).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
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
/// from its `GET /` page. Bounded to a second in all, whatever the holder sends (or
/// trickles).
pub(super) fn probe_exporter(addr: SocketAddr) -> Option<(String, u32)> {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    let left = || deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero());
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_millis(300)).ok()?;
    stream.set_write_timeout(left()).ok()?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    // A stranger may send anything, or nothing, or a byte at a time: read at most a few
    // KiB, and stop at the deadline.
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    while reply.len() < 4096 {
        stream.set_read_timeout(Some(left()?)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => reply.extend_from_slice(&chunk[..read]),
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    let body = reply.split_once("\r\n\r\n")?.1;
    if !body.starts_with("tonic-metrics exporter") {
        return None;
    }
    let field = |name: &str| body.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
    Some((field("program:")?.to_owned(), field("pid:")?.parse().ok()?))
}
