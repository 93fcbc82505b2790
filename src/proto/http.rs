//! The HTTP/1.x request heads the side endpoints (the Prometheus scrape) read: request line and
//! headers, nothing more, strictly. Bodies, chunking and keep-alive are not needed there.

/// A request head: method, target and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestHead {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The request target, as sent (path and query, or `*`).
    pub target: String,
    /// Header names (lower-cased) and values (trimmed), in order.
    pub headers: Vec<(String, String)>,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed HTTP request head: {0}")]
pub struct HttpHeadError(pub &'static str);

impl HttpRequestHead {
    /// Parses a head: the request line and header lines, each ending in CRLF, up to and
    /// optionally including the blank line that ends the head.
    ///
    /// ```
    /// use shardcast::proto::http::HttpRequestHead;
    ///
    /// let head = HttpRequestHead::parse(b"GET /metrics HTTP/1.1\r\nHost: edge\r\n\r\n")?;
    /// assert_eq!((head.method.as_str(), head.target.as_str()), ("GET", "/metrics"));
    /// assert_eq!(head.header("host"), Some("edge"));
    /// # Ok::<(), shardcast::proto::http::HttpHeadError>(())
    /// ```
    pub fn parse(head: &[u8]) -> Result<HttpRequestHead, HttpHeadError> {
        let text = std::str::from_utf8(head).map_err(|_| HttpHeadError("not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let request_line = lines.next().ok_or(HttpHeadError("no request line"))?;
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HttpHeadError("request line is not METHOD TARGET VERSION"));
        };
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(HttpHeadError("method is not a token"));
        }
        if !target.starts_with('/') && target != "*" {
            return Err(HttpHeadError("target is not a path"));
        }
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(HttpHeadError("not HTTP/1.0 or HTTP/1.1"));
        }
        let mut headers = Vec::new();
        for line in lines.take_while(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').ok_or(HttpHeadError("header without a colon"))?;
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(HttpHeadError("bad header name"));
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        Ok(HttpRequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            headers,
        })
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The length of a head up to and including its first blank line (`\r\n\r\n`), if it has one.
pub fn head_length(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_split_into_method_target_and_lower_cased_headers() {
        let request =
            HttpRequestHead::parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization:  Basic eA== \r\n\r\n")
                .unwrap();
        assert_eq!(
            (request.method.as_str(), request.target.as_str()),
            ("GET", "/metrics?x=1")
        );
        assert_eq!(request.header("authorization"), Some("Basic eA=="));
        assert_eq!(request.header("host"), Some("a"));
    }

    #[test]
    fn malformed_heads_are_refused_with_the_reason() {
        for (head, reason) in [
            (
                &b"GET /metrics\r\n\r\n"[..],
                "request line is not METHOD TARGET VERSION",
            ),
            (b"GET metrics HTTP/1.1\r\n\r\n", "target is not a path"),
            (b"GET /metrics HTTP/2\r\n\r\n", "not HTTP/1.0 or HTTP/1.1"),
            (b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", "header without a colon"),
            (b"G-T /metrics HTTP/1.1\r\n\r\n", "method is not a token"),
            (b"GET /metrics HTTP/1.1\r\nbad name: x\r\n\r\n", "bad header name"),
            (b"GET /\xff HTTP/1.1\r\n\r\n", "not UTF-8"),
        ] {
            assert_eq!(
                HttpRequestHead::parse(head),
                Err(HttpHeadError(reason)),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_length(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_length(b"GET / HTTP/1.1\r\n"), None);
    }
}
