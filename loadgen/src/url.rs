//! The little loadgen needs of an `rtsp://` URL: its server address (for the reachability check and
//! to resolve a host name once instead of once per session), and per-publisher path suffixes.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// An `rtsp://[userinfo@]host[:port][/path][?query]` URL cut into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspUrl {
    /// `user:password@` (with the `@`), or empty.
    userinfo: String,
    /// The host as written, without IPv6 brackets.
    pub host: String,
    /// The port (554 when absent).
    pub port: u16,
    /// Whether the port was written.
    explicit_port: bool,
    /// From the first `/` or `?` on, possibly empty.
    rest: String,
}

impl RtspUrl {
    /// Parses `url`; the message says what is wrong.
    pub fn parse(url: &str) -> Result<RtspUrl, String> {
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        if lower.starts_with("rtsps://") {
            return Err(format!(
                "{url}: rtsps:// (RTSP over TLS) is not supported by the client"
            ));
        }
        if !lower.starts_with("rtsp://") {
            return Err(format!("{url}: not an rtsp:// URL"));
        }
        let after = &url[7..];
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((user, host)) => (format!("{user}@"), host),
            None => (String::new(), authority),
        };
        let bad_port = || format!("{url}: invalid port");
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| format!("{url}: unclosed ["))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p.parse::<u16>().map_err(|_| bad_port())?)),
                None if after.is_empty() => (host, None),
                None => return Err(bad_port()),
            }
        } else {
            match host_port.rsplit_once(':') {
                Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad_port())?)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        Ok(RtspUrl {
            userinfo,
            host: host.to_owned(),
            port: port.unwrap_or(554),
            explicit_port: port.is_some(),
            rest: rest.to_owned(),
        })
    }

    /// `host:port` for messages.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The server's addresses (a DNS look-up for a host name).
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{} has no address", self.host));
        }
        Ok(addrs)
    }

    /// The same URL with the host replaced by `ip` (the port written out).
    pub fn with_ip(&self, ip: IpAddr) -> RtspUrl {
        RtspUrl {
            host: ip.to_string(),
            explicit_port: true,
            ..self.clone()
        }
    }

    /// The URL for publisher `index` of `count`: `{i}` replaced by the index, else `/index` appended
    /// to the path when `count > 1`, else the URL itself.
    pub fn for_index(&self, index: usize, count: usize) -> RtspUrl {
        let mut url = self.clone();
        if url.rest.contains("{i}") {
            url.rest = url.rest.replace("{i}", &index.to_string());
        } else if count > 1 {
            let (path, query) = match url.rest.find('?') {
                Some(q) => url.rest.split_at(q),
                None => (url.rest.as_str(), ""),
            };
            let path = path.trim_end_matches('/');
            url.rest = format!("{path}/{index}{query}");
        }
        url
    }

    /// The URL with credentials masked, for output.
    pub fn redacted(&self) -> String {
        let mut shown = self.clone();
        if let Some((user, _)) = self.userinfo.trim_end_matches('@').split_once(':') {
            shown.userinfo = format!("{user}:***@");
        }
        shown.to_string()
    }
}

impl std::fmt::Display for RtspUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "rtsp://{}{host}", self.userinfo)?;
        if self.explicit_port {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_round_trip() {
        let u = RtspUrl::parse("rtsp://alice:pw@cam.local:8554/live/x?y=1").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("cam.local", 8554));
        assert_eq!(u.to_string(), "rtsp://alice:pw@cam.local:8554/live/x?y=1");
        assert_eq!(u.redacted(), "rtsp://alice:***@cam.local:8554/live/x?y=1");
        let u = RtspUrl::parse("RTSP://[::1]/x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority()),
            ("::1", 554, "[::1]:554".to_owned())
        );
        assert_eq!(u.to_string(), "rtsp://[::1]/x");
        assert!(RtspUrl::parse("http://x/y").is_err());
        assert!(RtspUrl::parse("rtsp:///y").is_err());
        assert!(RtspUrl::parse("rtsp://h:70000/y").is_err());
        assert!(RtspUrl::parse("rtsps://h/y").is_err());
    }

    #[test]
    fn host_replaced_by_its_address() {
        let u = RtspUrl::parse("rtsp://u:p@localhost/live").unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(u.with_ip(ip).to_string(), "rtsp://u:p@127.0.0.1:554/live");
    }

    #[test]
    fn publisher_paths() {
        let u = RtspUrl::parse("rtsp://h:1/live?x=1").unwrap();
        assert_eq!(u.for_index(0, 1).to_string(), "rtsp://h:1/live?x=1");
        assert_eq!(u.for_index(3, 4).to_string(), "rtsp://h:1/live/3?x=1");
        let t = RtspUrl::parse("rtsp://h:1/cam{i}/main").unwrap();
        assert_eq!(t.for_index(2, 1).to_string(), "rtsp://h:1/cam2/main");
    }
}
