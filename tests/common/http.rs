//! An HTTP client as bare as Prometheus needs: one request per connection, read to the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A raw HTTP exchange: sends `request` and reads until the server closes.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8(response).unwrap()
}

/// A request without a body, with Basic credentials (base64 of `user:password`) if given.
pub fn get(addr: SocketAddr, method: &str, path: &str, authorization: Option<&str>) -> String {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: Basic {a}\r\n"));
    exchange(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n").as_bytes(),
    )
}

/// The status code of a response.
pub fn status(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or_default()
}

/// A header of a response, by case-insensitive name.
pub fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The value of a sample in Prometheus text, by its series exactly as written
/// (`shardcast_connections` or `shardcast_path_readers{path="live"}`).
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
