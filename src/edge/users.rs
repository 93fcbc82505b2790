//! Users, what they may do, and where they may connect from.
//!
//! A request comes from a user when its credentials verified, otherwise from the anonymous user
//! [`ANY_USER`]. With no users configured at all, everyone may do everything.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use regex::Regex;
use serde::Deserialize;

use crate::server::StoredPassword;

/// The name of the user that stands for unauthenticated clients.
pub const ANY_USER: &str = "any";

/// Something a user may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// ANNOUNCE and RECORD a path.
    Publish,
    /// DESCRIBE, SETUP and PLAY a path.
    Read,
    /// Scrape the metrics endpoint.
    Metrics,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Publish => "publish",
            Action::Read => "read",
            Action::Metrics => "metrics",
        })
    }
}

/// One permission: an action, on the paths a regex matches (all paths without one).
#[derive(Debug, Clone)]
pub struct Permission {
    /// What is allowed.
    pub action: Action,
    /// The paths it is allowed on; `None` means every path.
    pub path: Option<Regex>,
}

impl PartialEq for Permission {
    fn eq(&self, other: &Self) -> bool {
        self.action == other.action && self.path.as_ref().map(Regex::as_str) == other.path.as_ref().map(Regex::as_str)
    }
}

impl Eq for Permission {}

impl Permission {
    /// Whether this permission allows `action` on `path`.
    pub fn allows(&self, action: Action, path: &str) -> bool {
        self.action == action && self.path.as_ref().is_none_or(|re| re.is_match(path))
    }
}

/// An IPv4 or IPv6 network in CIDR form; a bare address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix_len: u8,
}

/// Why an address range could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpRangeError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address or CIDR range")]
    BadAddress(String),
    /// The prefix length is not a number within the address's size.
    #[error("{0:?} has a prefix length outside 0..=32 (IPv4) or 0..=128 (IPv6)")]
    BadPrefix(String),
}

impl FromStr for IpRange {
    type Err = IpRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| IpRangeError::BadAddress(text.to_owned()))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| IpRangeError::BadPrefix(text.to_owned()))?,
            None => max,
        };
        Ok(IpRange { network, prefix_len })
    }
}

impl IpRange {
    /// Whether `ip` is inside this range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_equal(&net.octets(), &ip.octets(), self.prefix_len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_equal(&net.octets(), &ip.octets(), self.prefix_len),
            _ => false,
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn prefix_equal(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// One `[[users]]` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// The user name; [`ANY_USER`] stands for unauthenticated clients.
    pub name: String,
    /// The password; `None` only for [`ANY_USER`].
    pub password: Option<StoredPassword>,
    /// Where the user may connect from; empty means anywhere.
    pub ips: Vec<IpRange>,
    /// What the user may do.
    pub permissions: Vec<Permission>,
}

impl UserConfig {
    /// Whether this user, connecting from `ip`, may do `action` on `path` (`None`: any path,
    /// for actions such as metrics that have none).
    pub fn may(&self, action: Action, path: &str, ip: IpAddr) -> bool {
        self.ip_allowed(ip) && self.permissions.iter().any(|p| p.allows(action, path))
    }

    /// Whether the user may connect from `ip`.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.ips.is_empty() || self.ips.iter().any(|r| r.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ip_ranges_match_v4_v6_and_mapped_addresses() {
        let lan: IpRange = "192.168.1.0/24".parse().unwrap();
        assert!(lan.contains(ip("192.168.1.77")));
        assert!(!lan.contains(ip("192.168.2.1")));
        assert!(lan.contains(ip("::ffff:192.168.1.3")));
        let odd: IpRange = "10.0.0.0/13".parse().unwrap();
        assert!(odd.contains(ip("10.7.255.255")) && !odd.contains(ip("10.8.0.0")));
        let v6: IpRange = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let one: IpRange = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("2001:db8::1")));
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        assert!(matches!(
            "10.0.0/8".parse::<IpRange>(),
            Err(IpRangeError::BadAddress(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<IpRange>(),
            Err(IpRangeError::BadPrefix(_))
        ));
        assert!(matches!("::/129".parse::<IpRange>(), Err(IpRangeError::BadPrefix(_))));
    }

    #[test]
    fn a_user_may_act_only_on_permitted_paths_from_permitted_addresses() {
        let user = UserConfig {
            name: "cam".into(),
            password: None,
            ips: vec!["127.0.0.0/8".parse().unwrap()],
            permissions: vec![
                Permission {
                    action: Action::Publish,
                    path: Some(Regex::new("^cams/").unwrap()),
                },
                Permission {
                    action: Action::Read,
                    path: None,
                },
            ],
        };
        let local = ip("127.0.0.1");
        assert!(user.may(Action::Publish, "cams/1", local));
        assert!(!user.may(Action::Publish, "other", local));
        assert!(user.may(Action::Read, "other", local));
        assert!(!user.may(Action::Metrics, "", local));
        assert!(!user.may(Action::Read, "other", ip("10.0.0.1")));
    }
}
