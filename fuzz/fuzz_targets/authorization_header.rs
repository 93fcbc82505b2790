//! Authorization and WWW-Authenticate parsing on arbitrary text: never panics, and
//! verification of whatever parses never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::proto::auth::{verify, AuthMethod, Authorization, Challenge, Credentials};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(auth) = Authorization::parse(text) {
        let again = Authorization::parse(&auth.encode()).expect("an encoded Authorization must parse");
        assert_eq!(again, auth);
        let expected = Credentials { username: "user", password: "pass" };
        let enabled = [AuthMethod::Basic, AuthMethod::DigestMd5, AuthMethod::DigestSha256];
        let _ = verify(&auth, &enabled, "DESCRIBE", "rtsp://127.0.0.1/p", "shardcast", "nonce", &expected);
    }
    let _ = Challenge::parse(text);
});
