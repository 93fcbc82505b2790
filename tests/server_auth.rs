//! Authentication over raw RTSP (DESIGN.md §2): challenges, acceptance, and the brake and close
//! that follow wrong credentials.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::relay_fixtures::relay;

use std::time::{Duration, Instant};

use common::RawClient;
use shardcast::proto::auth::{authorize, AuthMethod, Challenge};
use shardcast::server::{Server, ServerConfig};

fn start(methods: &[AuthMethod]) -> Server {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.auth_methods = methods.to_vec();
    let paths = relay::Paths::default();
    Server::start(config, move |ctx, _| {
        relay::Relay::new(ctx, paths.clone()).with_credentials("alice", "s3cret")
    })
    .expect("server starts")
}

/// Asks for `url` without credentials and returns the challenges of the 401.
fn challenges(c: &mut RawClient, url: &str) -> Vec<Challenge> {
    let r = c.request("DESCRIBE", url, &[], b"");
    assert_eq!(r.status, 401, "{r:?}");
    r.headers["www-authenticate"]
        .iter()
        .map(|v| Challenge::parse(v).unwrap())
        .collect()
}

#[test]
fn no_credentials_get_one_challenge_per_enabled_method_and_the_connection_stays_open() {
    let server = start(&[AuthMethod::Basic, AuthMethod::DigestMd5]);
    let url = format!("rtsp://{}/cam", server.local_addr());
    let mut c = RawClient::connect(server.local_addr());
    let offered = challenges(&mut c, &url);
    let methods: Vec<AuthMethod> = offered.iter().map(|ch| ch.method).collect();
    assert_eq!(methods, vec![AuthMethod::Basic, AuthMethod::DigestMd5]);
    assert!(offered.iter().all(|ch| ch.realm == "shardcast"));
    assert_eq!(c.request("OPTIONS", "*", &[], b"").status, 200);
}

#[test]
fn each_enabled_method_accepts_the_right_password() {
    for method in [AuthMethod::Basic, AuthMethod::DigestMd5, AuthMethod::DigestSha256] {
        let server = start(&[method]);
        let url = format!("rtsp://{}/cam", server.local_addr());
        let mut c = RawClient::connect(server.local_addr());
        let offered = challenges(&mut c, &url);
        assert_eq!(offered.len(), 1);
        let value = authorize(&offered[0], "alice", "s3cret", "DESCRIBE", &url, None).unwrap();
        // Past authentication, the relay answers 404: nothing is published on this path.
        let r = c.request("DESCRIBE", &url, &[("Authorization", &value)], b"");
        assert_eq!(r.status, 404, "{method}: {r:?}");
    }
}

#[test]
fn digest_credentials_for_the_path_alone_or_with_a_trailing_slash_are_accepted() {
    let server = start(&[AuthMethod::DigestMd5]);
    let url = format!("rtsp://{}/cam", server.local_addr());
    let mut c = RawClient::connect(server.local_addr());
    let offered = challenges(&mut c, &url);
    for uri in ["/cam".to_owned(), format!("{url}/")] {
        let value = authorize(&offered[0], "alice", "s3cret", "DESCRIBE", &uri, None).unwrap();
        let r = c.request("DESCRIBE", &url, &[("Authorization", &value)], b"");
        assert_eq!(r.status, 404, "digest over {uri}: {r:?}");
    }
}

#[test]
fn wrong_credentials_get_401_after_a_delay_and_the_connection_closes() {
    let server = start(&[AuthMethod::Basic, AuthMethod::DigestMd5]);
    let url = format!("rtsp://{}/cam", server.local_addr());
    let mut c = RawClient::connect(server.local_addr());
    let offered = challenges(&mut c, &url);
    let digest = offered.iter().find(|ch| ch.method == AuthMethod::DigestMd5).unwrap();
    let value = authorize(digest, "alice", "guess", "DESCRIBE", &url, None).unwrap();
    let asked = Instant::now();
    let r = c.request("DESCRIBE", &url, &[("Authorization", &value)], b"");
    assert_eq!(r.status, 401);
    assert!(
        asked.elapsed() >= Duration::from_millis(500),
        "answered after {:?}",
        asked.elapsed()
    );
    assert!(c.closed_within(Duration::from_secs(3)));
}

#[test]
fn a_method_that_is_not_enabled_is_refused_even_with_the_right_password() {
    let server = start(&[AuthMethod::DigestMd5]);
    let url = format!("rtsp://{}/cam", server.local_addr());
    let mut c = RawClient::connect(server.local_addr());
    let basic = Challenge {
        method: AuthMethod::Basic,
        realm: "shardcast".into(),
        nonce: None,
        opaque: None,
        stale: false,
        qop_auth: false,
    };
    let value = authorize(&basic, "alice", "s3cret", "DESCRIBE", &url, None).unwrap();
    let r = c.request("DESCRIBE", &url, &[("Authorization", &value)], b"");
    assert_eq!(r.status, 401);
    assert!(c.closed_within(Duration::from_secs(3)));
}

#[test]
fn a_digest_response_made_for_another_connections_nonce_is_refused() {
    let server = start(&[AuthMethod::DigestMd5]);
    let url = format!("rtsp://{}/cam", server.local_addr());
    let mut first = RawClient::connect(server.local_addr());
    let offered = challenges(&mut first, &url);
    let value = authorize(&offered[0], "alice", "s3cret", "DESCRIBE", &url, None).unwrap();
    let mut second = RawClient::connect(server.local_addr());
    let r = second.request("DESCRIBE", &url, &[("Authorization", &value)], b"");
    assert_eq!(r.status, 401, "a replayed digest must not work on another connection");
}
