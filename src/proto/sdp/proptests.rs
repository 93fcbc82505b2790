//! Property tests: no input panics, and written descriptions parse back unchanged.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::tests::SAMPLES;
use super::*;

/// A value as [`parse()`] leaves it: printable ASCII, no control characters, no trailing whitespace.
fn value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,24}[!-~])?"
}

fn attribute() -> impl Strategy<Value = Attribute> {
    (
        "[a-z][a-z0-9-]{0,10}",
        option::of(prop_oneof![value(), Just(String::new())]),
    )
        .prop_map(|(name, value)| Attribute { name, value })
}

fn connection() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("IN IP4 0.0.0.0".to_owned()),
        "IN IP4 224\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,3}",
        Just("IN IP6 ::".to_owned()),
    ]
}

fn media() -> impl Strategy<Value = MediaDescription> {
    let media_type = prop_oneof![
        Just("video".to_owned()),
        Just("audio".to_owned()),
        Just("application".to_owned()),
        "[a-z]{1,8}",
    ];
    let protocol = prop_oneof![Just("RTP/AVP"), Just("RTP/AVPF"), Just("RTP/SAVP"), Just("TCP/RTP/AVP")];
    let formats = vec((0u8..128).prop_map(|pt| pt.to_string()), 1..4);
    let info = option::of(value()).prop_map(|info| info.map(|v| ('i', v)).into_iter().collect::<Vec<_>>());
    (
        (media_type, any::<u16>(), option::of(any::<u16>()), protocol, formats),
        (
            option::of(connection()),
            vec("AS:[0-9]{1,5}", 0..3),
            vec(attribute(), 0..6),
            info,
        ),
    )
        .prop_map(
            |((media_type, port, port_count, protocol, formats), (connection, bandwidths, attributes, other_lines))| {
                MediaDescription {
                    media_type,
                    port,
                    port_count,
                    protocol: protocol.to_owned(),
                    formats,
                    connection,
                    bandwidths,
                    attributes,
                    other_lines,
                }
            },
        )
}

/// Descriptions in the normalised form [`parse()`] returns and `Display` writes: origin, name and
/// `t=` present, other lines in RFC 4566 order (`i=`, `b=`, `t=`).
fn session() -> impl Strategy<Value = SessionDescription> {
    let origin = "- [0-9]{1,12} [0-9]{1,3} IN IP4 127\\.0\\.0\\.1";
    let timing = prop_oneof![Just("0 0".to_owned()), "[0-9]{1,10} [0-9]{1,10}"];
    (
        (origin, value(), option::of(connection())),
        (option::of(value()), option::of("AS:[0-9]{1,5}"), timing),
        (vec(attribute(), 0..6), vec(media(), 1..4)),
    )
        .prop_map(
            |((origin, name, connection), (info, bandwidth, timing), (attributes, medias))| {
                let mut other_lines: Vec<(char, String)> = Vec::new();
                other_lines.extend(info.map(|v| ('i', v)));
                other_lines.extend(bandwidth.map(|v| ('b', v)));
                other_lines.push(('t', timing));
                SessionDescription {
                    origin: Some(origin),
                    session_name: Some(name),
                    connection,
                    attributes,
                    medias,
                    other_lines,
                }
            },
        )
}

/// SDP-looking lines, mostly well-formed so that many inputs parse.
fn sdp_line() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-ln-uw-z]=[ -~]{0,30}",
        4 => "m=[a-z]{1,6} [0-9]{1,5}(/[0-9]{1,2})? [A-Z/]{1,8}( [0-9]{1,3}){0,3}",
        4 => "a=(rtpmap|fmtp|control):[0-9]{0,3} [ -~]{0,20}",
        1 => "[vm]=[ -~]{0,20}",
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn arbitrary_printable_lines_never_panic(lines in vec("[ -~\t]{0,60}", 0..40), crlf in any::<bool>()) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        let _ = parse(text.as_bytes());
    }

    /// Whatever parses is stable: written and parsed again, it is unchanged, and so is its
    /// DESCRIBE form; the media helpers never panic on it.
    #[test]
    fn parsed_sdp_is_stable(lines in vec(sdp_line(), 0..30), crlf in any::<bool>()) {
        let text = format!("v=0\n{}", lines.join(if crlf { "\r\n" } else { "\n" }));
        if let Ok(sdp) = parse(text.as_bytes()) {
            prop_assert_eq!(parse(&sdp.to_bytes()), Ok(sdp.clone()));
            let describe = for_describe(&sdp, std::net::IpAddr::from([127, 0, 0, 1]));
            prop_assert_eq!(parse(&describe.to_bytes()), Ok(describe));
            for media in &sdp.medias {
                let pt = media.payload_type().unwrap_or(0);
                let _ = (media.clock_rate(), media.rtpmap(pt), media.fmtp(pt), media.control());
            }
        }
    }

    #[test]
    fn generated_sessions_round_trip(sdp in session()) {
        prop_assert_eq!(parse(sdp.to_string().as_bytes()), Ok(sdp));
    }

    #[test]
    fn mutated_samples_never_panic(index in 0usize..4, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = SAMPLES[index].as_bytes().to_vec();
        let at = at.index(bytes.len());
        bytes[at] = byte;
        if let Ok(sdp) = parse(&bytes) {
            prop_assert_eq!(parse(&sdp.to_bytes()), Ok(sdp));
        }
    }
}
