//! The requests real clients send, decoded with our codec.
//!
//! The fixtures under `tests/fixtures/clients/` are the exact bytes ffmpeg 5.1 and
//! GStreamer 1.22 sent to `tests/tools/rtsp_capture.py`, one request per file, in the order
//! sent (`tests/fixtures/clients/README.md` says how they were made). These tests pin what
//! those clients send, quirks included, so a codec change that would refuse them fails here
//! rather than against a camera or a player in the field.

use bytes::BytesMut;

use super::{Decoder, Limits, Message, Request};
use crate::proto::auth::{self, AuthMethod, Authorization, Credentials};
use crate::proto::headers::{CSeq, LowerTransport, SessionHeader, Transport, Transports, TypedHeader};
use crate::proto::sdp;
use crate::proto::url::path_and_control;
use crate::proto::Method;

/// One captured request: `<client>-<scenario>/<NN>-<METHOD>.txt` and its bytes.
struct Fixture {
    name: &'static str,
    bytes: &'static [u8],
}

macro_rules! fixture {
    ($dir:literal, $file:literal) => {
        Fixture {
            name: concat!($dir, "/", $file),
            bytes: include_bytes!(concat!("../../../tests/fixtures/clients/", $dir, "/", $file)),
        }
    };
}

const FFMPEG_READ_TCP: &[Fixture] = &[
    fixture!("ffmpeg-read-tcp", "01-OPTIONS.txt"),
    fixture!("ffmpeg-read-tcp", "02-DESCRIBE.txt"),
    fixture!("ffmpeg-read-tcp", "03-SETUP.txt"),
    fixture!("ffmpeg-read-tcp", "04-PLAY.txt"),
    fixture!("ffmpeg-read-tcp", "05-TEARDOWN.txt"),
];

const FFMPEG_READ_UDP: &[Fixture] = &[
    fixture!("ffmpeg-read-udp", "01-OPTIONS.txt"),
    fixture!("ffmpeg-read-udp", "02-DESCRIBE.txt"),
    fixture!("ffmpeg-read-udp", "03-SETUP.txt"),
    fixture!("ffmpeg-read-udp", "04-PLAY.txt"),
    fixture!("ffmpeg-read-udp", "05-TEARDOWN.txt"),
];

const FFMPEG_PUBLISH_TCP: &[Fixture] = &[
    fixture!("ffmpeg-publish-tcp", "01-OPTIONS.txt"),
    fixture!("ffmpeg-publish-tcp", "02-ANNOUNCE.txt"),
    fixture!("ffmpeg-publish-tcp", "03-SETUP.txt"),
    fixture!("ffmpeg-publish-tcp", "04-SETUP.txt"),
    fixture!("ffmpeg-publish-tcp", "05-RECORD.txt"),
    fixture!("ffmpeg-publish-tcp", "06-TEARDOWN.txt"),
];

const FFMPEG_READ_DIGEST: &[Fixture] = &[
    fixture!("ffmpeg-read-digest", "01-OPTIONS.txt"),
    fixture!("ffmpeg-read-digest", "02-DESCRIBE.txt"),
    fixture!("ffmpeg-read-digest", "03-DESCRIBE.txt"),
    fixture!("ffmpeg-read-digest", "04-SETUP.txt"),
    fixture!("ffmpeg-read-digest", "05-PLAY.txt"),
    fixture!("ffmpeg-read-digest", "06-TEARDOWN.txt"),
];

const GSTREAMER_READ_TCP: &[Fixture] = &[
    fixture!("gstreamer-read-tcp", "01-OPTIONS.txt"),
    fixture!("gstreamer-read-tcp", "02-DESCRIBE.txt"),
    fixture!("gstreamer-read-tcp", "03-SETUP.txt"),
    fixture!("gstreamer-read-tcp", "04-PLAY.txt"),
    fixture!("gstreamer-read-tcp", "05-TEARDOWN.txt"),
];

const GSTREAMER_READ_UDP: &[Fixture] = &[
    fixture!("gstreamer-read-udp", "01-OPTIONS.txt"),
    fixture!("gstreamer-read-udp", "02-DESCRIBE.txt"),
    fixture!("gstreamer-read-udp", "03-SETUP.txt"),
    fixture!("gstreamer-read-udp", "04-PLAY.txt"),
    fixture!("gstreamer-read-udp", "05-TEARDOWN.txt"),
];

const GSTREAMER_READ_DIGEST: &[Fixture] = &[
    fixture!("gstreamer-read-digest", "01-OPTIONS.txt"),
    fixture!("gstreamer-read-digest", "02-DESCRIBE.txt"),
    fixture!("gstreamer-read-digest", "03-DESCRIBE.txt"),
    fixture!("gstreamer-read-digest", "04-SETUP.txt"),
    fixture!("gstreamer-read-digest", "05-PLAY.txt"),
    fixture!("gstreamer-read-digest", "06-TEARDOWN.txt"),
];

const GSTREAMER_PUBLISH_TCP: &[Fixture] = &[
    fixture!("gstreamer-publish-tcp", "01-OPTIONS.txt"),
    fixture!("gstreamer-publish-tcp", "02-ANNOUNCE.txt"),
    fixture!("gstreamer-publish-tcp", "03-SETUP.txt"),
    fixture!("gstreamer-publish-tcp", "04-RECORD.txt"),
    fixture!("gstreamer-publish-tcp", "05-PAUSE.txt"),
    fixture!("gstreamer-publish-tcp", "06-TEARDOWN.txt"),
];

/// Every captured session, each in the order its client sent the requests.
const SESSIONS: &[&[Fixture]] = &[
    FFMPEG_READ_TCP,
    FFMPEG_READ_UDP,
    FFMPEG_PUBLISH_TCP,
    FFMPEG_READ_DIGEST,
    GSTREAMER_READ_TCP,
    GSTREAMER_READ_UDP,
    GSTREAMER_READ_DIGEST,
    GSTREAMER_PUBLISH_TCP,
];

/// What the capture server's 401 challenged with, and the credentials the clients were given.
const REALM: &str = "shardcast";
const NONCE: &str = "0123456789abcdef";
const ENABLED: &[AuthMethod] = &[AuthMethod::DigestMd5, AuthMethod::Basic];
const RIGHT: Credentials<'static> = Credentials {
    username: "user",
    password: "pass",
};
const WRONG_PASSWORD: Credentials<'static> = Credentials {
    username: "user",
    password: "wrong",
};

fn all_fixtures() -> impl Iterator<Item = &'static Fixture> {
    SESSIONS.iter().flat_map(|session| session.iter())
}

/// The method the file name says the request has (`NN-METHOD.txt`).
fn method_in_name(fixture: &Fixture) -> Method {
    let file = fixture.name.rsplit('/').next().unwrap();
    let method = file.strip_suffix(".txt").unwrap().split_once('-').unwrap().1;
    Method::parse(method).unwrap()
}

/// Decodes a fixture given whole: exactly one request, nothing left over.
fn decode(fixture: &Fixture) -> Request {
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::from(fixture.bytes);
    let message = decoder
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
    let Some(Message::Request(request)) = message else {
        panic!("{}: expected a whole request, got {message:?}", fixture.name);
    };
    assert!(buf.is_empty(), "{}: {} bytes left over", fixture.name, buf.len());
    assert_eq!(decoder.decode(&mut buf).unwrap(), None, "{}", fixture.name);
    assert_eq!(decoder.consumed(), fixture.bytes.len() as u64, "{}", fixture.name);
    request
}

/// Decodes a fixture fed one byte at a time: nothing until the last byte, then the request.
fn decode_byte_by_byte(fixture: &Fixture) -> Request {
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let (last, head) = fixture.bytes.split_last().unwrap();
    for (i, byte) in head.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let message = decoder
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{} at byte {i}: {e}", fixture.name));
        assert_eq!(
            message,
            None,
            "{}: a message before byte {i} of {}",
            fixture.name,
            fixture.bytes.len()
        );
    }
    buf.extend_from_slice(&[*last]);
    match decoder.decode(&mut buf) {
        Ok(Some(Message::Request(request))) => {
            assert!(buf.is_empty(), "{}", fixture.name);
            request
        }
        other => panic!(
            "{}: expected a whole request after the last byte, got {other:?}",
            fixture.name
        ),
    }
}

fn fixture_named(session: &'static [Fixture], file: &str) -> &'static Fixture {
    session
        .iter()
        .find(|f| f.name.ends_with(file))
        .unwrap_or_else(|| panic!("no fixture {file}"))
}

fn request_in(session: &'static [Fixture], file: &str) -> Request {
    decode(fixture_named(session, file))
}

/// The only transport a SETUP offers.
fn transport_of(request: &Request) -> Transport {
    let value = request.headers.get("Transport").expect("SETUP without Transport");
    let mut transports = Transports::parse(value).unwrap().0;
    assert_eq!(transports.len(), 1, "{value}");
    transports.remove(0)
}

fn session_id(request: &Request) -> Option<String> {
    request
        .headers
        .get("Session")
        .map(|v| SessionHeader::parse(v).unwrap().id)
}

#[test]
fn every_captured_request_decodes_whole_with_the_method_it_was_sent_with() {
    for fixture in all_fixtures() {
        let request = decode(fixture);
        assert_eq!(request.method, method_in_name(fixture), "{}", fixture.name);
        assert_eq!(request.headers.count("CSeq"), 1, "{}", fixture.name);
    }
}

#[test]
fn every_captured_request_decodes_identically_fed_one_byte_at_a_time() {
    for fixture in all_fixtures() {
        assert_eq!(decode_byte_by_byte(fixture), decode(fixture), "{}", fixture.name);
    }
}

#[test]
fn every_captured_session_decodes_as_one_stream() {
    for session in SESSIONS {
        let mut buf = BytesMut::new();
        for fixture in session.iter() {
            buf.extend_from_slice(fixture.bytes);
        }
        let mut decoder = Decoder::new(Limits::default());
        for fixture in session.iter() {
            let message = decoder.decode(&mut buf).unwrap();
            assert_eq!(message, Some(Message::Request(decode(fixture))), "{}", fixture.name);
        }
        assert!(buf.is_empty());
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    }
}

#[test]
fn clients_count_cseq_up_from_one_including_the_retry_after_401() {
    for session in SESSIONS {
        for (i, fixture) in session.iter().enumerate() {
            let request = decode(fixture);
            let cseq = CSeq::parse(request.headers.get("CSeq").unwrap()).unwrap();
            assert_eq!(cseq, CSeq(i as u32 + 1), "{}", fixture.name);
        }
    }
}

#[test]
fn every_captured_url_resolves_to_live_cam_with_a_control_only_on_setup() {
    for fixture in all_fixtures() {
        let request = decode(fixture);
        assert!(
            request.url.starts_with("rtsp://127.0.0.1:"),
            "{}: {}",
            fixture.name,
            request.url
        );
        let parts = path_and_control(&request.url).unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
        assert_eq!(parts.path, "live/cam", "{}", fixture.name);
        assert_eq!(parts.query, None, "{}", fixture.name);
        assert_eq!(
            parts.control.is_some(),
            request.method == Method::Setup,
            "{}: {}",
            fixture.name,
            request.url
        );
    }
}

#[test]
fn readers_set_up_the_trackid_control_our_describe_announced() {
    for session in [
        FFMPEG_READ_TCP,
        FFMPEG_READ_UDP,
        FFMPEG_READ_DIGEST,
        GSTREAMER_READ_TCP,
        GSTREAMER_READ_UDP,
        GSTREAMER_READ_DIGEST,
    ] {
        let setups: Vec<Request> = session
            .iter()
            .map(decode)
            .filter(|r| r.method == Method::Setup)
            .collect();
        assert_eq!(setups.len(), 1);
        let parts = path_and_control(&setups[0].url).unwrap();
        assert_eq!(parts.control.as_deref(), Some("trackID=0"), "{}", setups[0].url);
        assert!(setups[0].url.ends_with("/live/cam/trackID=0"), "{}", setups[0].url);
    }
}

#[test]
fn readers_play_and_tear_down_the_content_base_with_its_trailing_slash() {
    for session in [
        FFMPEG_READ_TCP,
        FFMPEG_READ_UDP,
        FFMPEG_READ_DIGEST,
        GSTREAMER_READ_TCP,
        GSTREAMER_READ_UDP,
        GSTREAMER_READ_DIGEST,
    ] {
        for request in session.iter().map(decode) {
            if matches!(request.method, Method::Play | Method::Teardown) {
                assert!(
                    request.url.ends_with("/live/cam/"),
                    "{:?} {}",
                    request.method,
                    request.url
                );
            }
        }
    }
}

#[test]
fn requests_after_setup_or_announce_carry_the_session_id_without_timeout() {
    for session in SESSIONS {
        let mut established = false;
        for fixture in session.iter() {
            let request = decode(fixture);
            let session_header = request.headers.get("Session");
            if established {
                assert_eq!(session_id(&request).as_deref(), Some("12345678"), "{}", fixture.name);
                assert!(!session_header.unwrap().contains("timeout"), "{}", fixture.name);
            } else {
                assert_eq!(session_header, None, "{}", fixture.name);
            }
            established |= matches!(request.method, Method::Setup | Method::Announce);
        }
    }
}

#[test]
fn ffmpeg_tcp_setup_asks_for_interleaved_channels() {
    let t = transport_of(&request_in(FFMPEG_READ_TCP, "03-SETUP.txt"));
    assert_eq!(t.lower, Some(LowerTransport::Tcp));
    assert_eq!(t.lower_transport(), LowerTransport::Tcp);
    assert_eq!(t.interleaved, Some((0, 1)));
    assert_eq!(t.client_port, None);
    assert!(!t.is_record());
    assert!(!t.is_multicast());
}

#[test]
fn ffmpeg_udp_setup_names_udp_and_offers_an_even_odd_client_port_pair() {
    let t = transport_of(&request_in(FFMPEG_READ_UDP, "03-SETUP.txt"));
    assert_eq!(t.lower, Some(LowerTransport::Udp));
    assert_eq!(t.interleaved, None);
    let (rtp, rtcp) = t.client_port.expect("client_port");
    assert_eq!(rtp % 2, 0);
    assert_eq!(rtcp, rtp + 1);
    assert!(!t.is_record());
}

#[test]
fn gstreamer_tcp_setup_asks_for_interleaved_channels() {
    let t = transport_of(&request_in(GSTREAMER_READ_TCP, "03-SETUP.txt"));
    assert_eq!(t.lower_transport(), LowerTransport::Tcp);
    assert_eq!(t.interleaved, Some((0, 1)));
    assert_eq!(t.client_port, None);
    assert!(!t.is_record());
}

#[test]
fn gstreamer_udp_setup_implies_udp_without_naming_it() {
    let setup = request_in(GSTREAMER_READ_UDP, "03-SETUP.txt");
    assert!(setup.headers.get("Transport").unwrap().starts_with("RTP/AVP;"));
    let t = transport_of(&setup);
    assert_eq!(t.lower, None);
    assert_eq!(t.lower_transport(), LowerTransport::Udp);
    assert_eq!(t.interleaved, None);
    let (rtp, rtcp) = t.client_port.expect("client_port");
    assert_eq!(rtp % 2, 0);
    assert_eq!(rtcp, rtp + 1);
}

#[test]
fn ffmpeg_publish_sets_up_each_streamid_to_record_on_its_own_channel_pair() {
    for (file, control, channels) in [
        ("03-SETUP.txt", "streamid=0", (0, 1)),
        ("04-SETUP.txt", "streamid=1", (2, 3)),
    ] {
        let setup = request_in(FFMPEG_PUBLISH_TCP, file);
        assert_eq!(path_and_control(&setup.url).unwrap().control.as_deref(), Some(control));
        let t = transport_of(&setup);
        assert_eq!(t.lower_transport(), LowerTransport::Tcp);
        assert_eq!(t.interleaved, Some(channels));
        assert!(t.is_record());
    }
}

#[test]
fn gstreamer_publish_setup_says_mode_record_in_upper_case() {
    let setup = request_in(GSTREAMER_PUBLISH_TCP, "03-SETUP.txt");
    assert!(setup.headers.get("Transport").unwrap().contains("mode=RECORD"));
    assert_eq!(
        path_and_control(&setup.url).unwrap().control.as_deref(),
        Some("stream=0")
    );
    let t = transport_of(&setup);
    assert_eq!(t.lower_transport(), LowerTransport::Tcp);
    assert_eq!(t.interleaved, Some((0, 1)));
    assert!(t.is_record());
}

#[test]
fn publishers_record_the_aggregate_url_without_a_control() {
    for session in [FFMPEG_PUBLISH_TCP, GSTREAMER_PUBLISH_TCP] {
        let record = session.iter().map(decode).find(|r| r.method == Method::Record).unwrap();
        assert!(record.url.ends_with("/live/cam"), "{}", record.url);
        assert_eq!(path_and_control(&record.url).unwrap().control, None);
    }
}

#[test]
fn gstreamer_publisher_pauses_before_tearing_down() {
    let methods: Vec<Method> = GSTREAMER_PUBLISH_TCP.iter().map(|f| decode(f).method).collect();
    assert_eq!(&methods[methods.len() - 2..], &[Method::Pause, Method::Teardown]);
}

#[test]
fn ffmpeg_announce_sdp_has_an_h264_and_an_aac_stream() {
    let announce = request_in(FFMPEG_PUBLISH_TCP, "02-ANNOUNCE.txt");
    assert_eq!(announce.headers.get("Content-Type"), Some("application/sdp"));
    let length: usize = announce.headers.get("Content-Length").unwrap().parse().unwrap();
    assert_eq!(announce.body.len(), length);
    let description = sdp::parse(&announce.body).unwrap();
    assert_eq!(description.medias.len(), 2);
    assert_eq!(description.medias[0].media_type, "video");
    assert_eq!(description.medias[0].clock_rate(), Some(90_000));
    assert_eq!(description.medias[0].control(), Some("streamid=0"));
    assert_eq!(description.medias[1].media_type, "audio");
    assert_eq!(description.medias[1].clock_rate(), Some(44_100));
    assert_eq!(description.medias[1].control(), Some("streamid=1"));
    // ffmpeg separates fmtp parameters with "; ", not ";".
    let fmtp = description.medias[0].fmtp(96).unwrap();
    assert!(fmtp.contains("; sprop-parameter-sets="), "{fmtp}");
}

#[test]
fn gstreamer_announce_sdp_has_one_h264_stream_with_a_media_level_connection() {
    let announce = request_in(GSTREAMER_PUBLISH_TCP, "02-ANNOUNCE.txt");
    assert_eq!(announce.headers.get("Content-Type"), Some("application/sdp"));
    let length: usize = announce.headers.get("Content-Length").unwrap().parse().unwrap();
    assert_eq!(announce.body.len(), length);
    let description = sdp::parse(&announce.body).unwrap();
    assert_eq!(description.connection, None);
    assert_eq!(description.medias.len(), 1);
    let video = &description.medias[0];
    assert_eq!(video.media_type, "video");
    assert_eq!(video.clock_rate(), Some(90_000));
    assert_eq!(video.control(), Some("stream=0"));
    assert_eq!(video.connection.as_deref(), Some("IN IP4 0.0.0.0"));
}

#[test]
fn gstreamer_first_options_carries_realmedia_headers_and_two_user_agents() {
    for session in [GSTREAMER_READ_TCP, GSTREAMER_READ_UDP, GSTREAMER_READ_DIGEST] {
        let options = request_in(session, "01-OPTIONS.txt");
        let agents: Vec<&str> = options.headers.get_all("User-Agent").collect();
        assert_eq!(agents.len(), 2);
        assert_eq!(agents[0], "GStreamer/1.22.0");
        assert!(agents[1].starts_with("RealMedia Player"), "{}", agents[1]);
        assert_eq!(options.headers.get("User-Agent"), Some("GStreamer/1.22.0"));
        assert!(options.headers.get("ClientChallenge").is_some());
        assert!(options.headers.get("PlayerStarttime").is_some());
    }
    // rtspclientsink does not.
    let options = request_in(GSTREAMER_PUBLISH_TCP, "01-OPTIONS.txt");
    assert_eq!(options.headers.count("User-Agent"), 1);
}

/// Checks every request of a session the 401 made the client authenticate: none before the
/// retry, a Digest (never Basic, though Basic was offered too) on every request from it on,
/// hashed over the request URL, that verifies with the right password and not a wrong one.
fn check_digest_session(session: &'static [Fixture]) {
    let requests: Vec<Request> = session.iter().map(decode).collect();
    assert_eq!(requests[0].method, Method::Options);
    assert_eq!(requests[1].method, Method::Describe);
    assert_eq!(requests[2].method, Method::Describe);
    for request in &requests[..2] {
        assert_eq!(request.headers.get("Authorization"), None);
    }
    for request in &requests[2..] {
        let value = request
            .headers
            .get("Authorization")
            .unwrap_or_else(|| panic!("{:?} without Authorization", request.method));
        let authorization = Authorization::parse(value).unwrap();
        let Authorization::Digest(digest) = &authorization else {
            panic!("expected Digest, got {authorization:?}");
        };
        assert_eq!(digest.username, "user");
        assert_eq!(digest.realm, REALM);
        assert_eq!(digest.nonce, NONCE);
        assert_eq!(digest.uri, request.url);
        assert_eq!(digest.qop, None);
        let method = request.method.as_str();
        assert!(
            auth::verify(&authorization, ENABLED, method, &request.url, REALM, NONCE, &RIGHT),
            "{method} {}",
            request.url
        );
        assert!(!auth::verify(
            &authorization,
            ENABLED,
            method,
            &request.url,
            REALM,
            NONCE,
            &WRONG_PASSWORD
        ));
        assert!(!auth::verify(
            &authorization,
            &[AuthMethod::Basic],
            method,
            &request.url,
            REALM,
            NONCE,
            &RIGHT
        ));
    }
}

#[test]
fn ffmpeg_answers_the_401_with_a_digest_on_every_later_request() {
    check_digest_session(FFMPEG_READ_DIGEST);
}

#[test]
fn gstreamer_answers_the_401_with_a_digest_on_every_later_request() {
    check_digest_session(GSTREAMER_READ_DIGEST);
}

#[test]
fn ffmpeg_and_gstreamer_compute_the_same_digest_for_the_same_request() {
    // Without qop the digest depends only on credentials, nonce, method and URI.
    for file in ["03-DESCRIBE.txt", "04-SETUP.txt", "05-PLAY.txt", "06-TEARDOWN.txt"] {
        let ffmpeg = request_in(FFMPEG_READ_DIGEST, file);
        let gstreamer = request_in(GSTREAMER_READ_DIGEST, file);
        assert_eq!(ffmpeg.url, gstreamer.url, "{file}");
        assert_eq!(
            ffmpeg.headers.get("Authorization"),
            gstreamer.headers.get("Authorization"),
            "{file}"
        );
    }
}
