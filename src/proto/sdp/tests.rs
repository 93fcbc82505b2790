//! Tests on real publisher SDPs, errors and limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

/// ffmpeg 5.1 ANNOUNCE, H.264 + AAC (`ffmpeg -re -i in.mp4 -c copy -f rtsp rtsp://...`).
pub(super) const FFMPEG: &str = "v=0\r\n\
o=- 0 0 IN IP4 127.0.0.1\r\n\
s=No Name\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
a=tool:libavformat 59.27.100\r\n\
m=video 0 RTP/AVP 96\r\n\
b=AS:200\r\n\
a=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QACqzZRifmwFqAgICgAAADACAAAAMD0eJEsg==,aOvjyyLA; profile-level-id=64000A\r\n\
a=control:streamid=0\r\n\
m=audio 0 RTP/AVP 97\r\n\
b=AS:128\r\n\
a=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=121056E500\r\n\
a=control:streamid=1\r\n";

/// GStreamer 1.22 `rtspclientsink`.
pub(super) const GSTREAMER: &str = "v=0\r\no=- 1188340656180883 1 IN IP4 127.0.0.1\r\n\
s=Session streamed with GStreamer\r\ni=rtsp-server\r\nt=0 0\r\na=tool:GStreamer\r\na=type:broadcast\r\n\
m=video 0 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1;profile-level-id=42c01f\r\na=control:stream=0\r\n";

/// An IP camera: LF endings, `a=` before `s=`, no `t=`, trailing spaces, an unknown `y=` line,
/// a PCMU track without rtpmap and an ONVIF metadata track.
pub(super) const CAMERA: &str = "v=0\n\
o=- 1109162014219182 1109162014219192 IN IP4 192.0.2.10\n\
a=control:*\n\
s=Media Presentation \n\
e=NONE\n\
b=AS:5100\n\
a=range:npt=0-\n\
a=x-dimensions:1920,1080  \n\
\n\
m=video 0 RTP/AVP 96\n\
c=IN IP4 0.0.0.0\n\
b=AS:5000\n\
a=rtpmap:96 H264/90000\n\
a=control:trackID=1\n\
a=fmtp:96 profile-level-id=420029; packetization-mode=1\n\
y=0100000001\n\
m=audio 0 RTP/AVP 0\n\
c=IN IP4 0.0.0.0\n\
b=AS:64\n\
a=control:trackID=2\n\
a=recvonly\n\
m=application 0 RTP/AVP 107\n\
c=IN IP4 0.0.0.0\n\
b=AS:0\n\
a=rtpmap:107 vnd.onvif.metadata/90000\n\
a=control:trackID=3\n";

/// A multicast announcement with a TTL and a port count.
pub(super) const MULTICAST: &str = "v=0\r\no=- 3 3 IN IP4 192.0.2.1\r\ns=Multicast\r\n\
c=IN IP4 224.2.1.1/127\r\nt=0 0\r\nm=video 5004/2 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

pub(super) const SAMPLES: [&str; 4] = [FFMPEG, GSTREAMER, CAMERA, MULTICAST];

fn parse_str(s: &str) -> SessionDescription {
    parse(s.as_bytes()).unwrap()
}

fn rtpmap(pt: u8, encoding: &str, clock_rate: u32, channels: Option<u16>) -> RtpMap {
    RtpMap {
        payload_type: pt,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    }
}

fn t00() -> Vec<(char, String)> {
    vec![('t', "0 0".to_owned())]
}

#[test]
fn ffmpeg_announce() {
    let sdp = parse_str(FFMPEG);
    assert_eq!(sdp.origin.as_deref(), Some("- 0 0 IN IP4 127.0.0.1"));
    assert_eq!(sdp.session_name.as_deref(), Some("No Name"));
    assert_eq!(sdp.connection.as_deref(), Some("IN IP4 127.0.0.1"));
    assert_eq!(sdp.attributes, [Attribute::new("tool", "libavformat 59.27.100")]);
    assert_eq!(sdp.other_lines, t00());
    assert_eq!(sdp.medias.len(), 2);

    let video = &sdp.medias[0];
    assert_eq!(
        (video.media_type.as_str(), video.port, video.port_count),
        ("video", 0, None)
    );
    assert_eq!(
        (video.protocol.as_str(), video.formats.as_slice()),
        ("RTP/AVP", &["96".to_owned()][..])
    );
    assert_eq!(video.bandwidths, ["AS:200"]);
    assert_eq!(video.payload_type(), Some(96));
    assert_eq!(video.rtpmap(96), Some(rtpmap(96, "H264", 90000, None)));
    assert_eq!(video.rtpmap(97), None);
    assert_eq!(video.clock_rate(), Some(90000));
    assert_eq!(video.control(), Some("streamid=0"));
    let fmtp = video.fmtp(96).unwrap();
    assert!(
        fmtp.starts_with("packetization-mode=1; sprop-parameter-sets=Z2QACqzZ"),
        "{fmtp}"
    );
    assert!(fmtp.ends_with("profile-level-id=64000A"), "{fmtp}");

    let audio = &sdp.medias[1];
    assert_eq!(audio.media_type, "audio");
    assert_eq!(audio.rtpmap(97), Some(rtpmap(97, "MPEG4-GENERIC", 44100, Some(2))));
    assert_eq!(audio.clock_rate(), Some(44100));
    assert_eq!(audio.control(), Some("streamid=1"));
    assert!(audio.fmtp(97).unwrap().starts_with("profile-level-id=1;mode=AAC-hbr;"));
    assert_eq!(audio.fmtp(96), None);
    // ffmpeg's SDP is already in canonical form: it is written back byte for byte.
    assert_eq!(sdp.to_string(), FFMPEG);
    // So is its LF-only spelling, once the line endings are CRLF.
    assert_eq!(parse_str(&FFMPEG.replace("\r\n", "\n")), sdp);
}

#[test]
fn gstreamer_rtspclientsink() {
    let sdp = parse_str(GSTREAMER);
    assert_eq!(sdp.session_name.as_deref(), Some("Session streamed with GStreamer"));
    assert_eq!(sdp.connection, None);
    assert_eq!(
        sdp.other_lines,
        [('i', "rtsp-server".to_owned()), ('t', "0 0".to_owned())]
    );
    assert_eq!(
        sdp.attributes,
        [Attribute::new("tool", "GStreamer"), Attribute::new("type", "broadcast")]
    );
    let video = &sdp.medias[0];
    assert_eq!(video.connection.as_deref(), Some("IN IP4 0.0.0.0"));
    assert_eq!(video.control(), Some("stream=0"));
    assert_eq!(video.fmtp(96), Some("packetization-mode=1;profile-level-id=42c01f"));
    assert_eq!(video.clock_rate(), Some(90000));
    assert_eq!(sdp.to_string(), GSTREAMER);
}

#[test]
fn ip_camera() {
    let sdp = parse_str(CAMERA);
    assert_eq!(sdp.session_name.as_deref(), Some("Media Presentation"));
    assert_eq!(
        sdp.attributes,
        [
            Attribute::new("control", "*"),
            Attribute::new("range", "npt=0-"),
            Attribute::new("x-dimensions", "1920,1080"),
        ]
    );
    // Missing t= is added; the other lines are put in RFC 4566 order.
    let expected: Vec<(char, String)> = vec![('e', "NONE".into()), ('b', "AS:5100".into()), ('t', "0 0".into())];
    assert_eq!(sdp.other_lines, expected);
    let [video, audio, metadata] = &sdp.medias[..] else {
        panic!("{:?}", sdp.medias)
    };
    assert_eq!(video.other_lines, [('y', "0100000001".to_owned())]);
    assert_eq!(video.fmtp(96), Some("profile-level-id=420029; packetization-mode=1"));
    assert_eq!(video.control(), Some("trackID=1"));

    assert_eq!((audio.media_type.as_str(), audio.payload_type()), ("audio", Some(0)));
    assert_eq!(audio.rtpmap(0), None);
    assert_eq!(audio.clock_rate(), Some(8000));
    assert_eq!(audio.attribute("recvonly"), Some(""));
    assert_eq!(audio.attribute("RECVONLY"), Some(""));
    assert_eq!(audio.attribute("sendonly"), None);

    assert_eq!(metadata.media_type, "application");
    assert_eq!(
        metadata.rtpmap(107),
        Some(rtpmap(107, "vnd.onvif.metadata", 90000, None))
    );
    assert_eq!(metadata.clock_rate(), Some(90000));
    assert_eq!(metadata.bandwidths, ["AS:0"]);

    let text = sdp.to_string();
    assert!(text.starts_with(
        "v=0\r\no=- 1109162014219182 1109162014219192 IN IP4 192.0.2.10\r\n\
        s=Media Presentation\r\ne=NONE\r\nb=AS:5100\r\nt=0 0\r\na=control:*\r\n"
    ));
    assert!(!text.replace("\r\n", "").contains('\n'));
}

#[test]
fn multicast() {
    let sdp = parse_str(MULTICAST);
    assert_eq!(sdp.connection.as_deref(), Some("IN IP4 224.2.1.1/127"));
    let video = &sdp.medias[0];
    assert_eq!((video.port, video.port_count), (5004, Some(2)));
    assert!(sdp.to_string().contains("m=video 5004/2 RTP/AVP 96\r\n"));
    assert_eq!(sdp.to_string(), MULTICAST);
}

#[test]
fn samples_round_trip() {
    for sample in SAMPLES {
        let sdp = parse_str(sample);
        assert_eq!(parse(&sdp.to_bytes()).as_ref(), Ok(&sdp), "{sample}");
        assert_eq!(sdp.to_bytes(), sdp.to_string().into_bytes());
    }
}

#[test]
fn describe_from_samples() {
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    for sample in SAMPLES {
        let publisher = parse_str(sample);
        let sdp = for_describe(&publisher, ip);
        assert_eq!(sdp.origin.as_deref(), Some("- 0 0 IN IP4 192.0.2.7"));
        assert_eq!(sdp.session_name, publisher.session_name);
        assert_eq!(sdp.connection.as_deref(), Some("IN IP4 0.0.0.0"));
        assert_eq!(sdp.other_lines.iter().filter(|(kind, _)| *kind == 't').count(), 1);
        let controls: Vec<_> = sdp.attributes.iter().filter(|a| a.is("control")).collect();
        assert_eq!(controls, [&Attribute::new("control", "*")]);
        assert!(!sdp.attributes.iter().any(|a| a.is("range")));
        assert_eq!(sdp.medias.len(), publisher.medias.len());
        for (index, (media, original)) in sdp.medias.iter().zip(&publisher.medias).enumerate() {
            assert_eq!(
                (media.port, media.port_count, media.connection.as_ref()),
                (0, None, None)
            );
            assert_eq!(media.control(), Some(format!("trackID={index}").as_str()));
            assert_eq!(media.attributes.iter().filter(|a| a.is("control")).count(), 1);
            assert_eq!(
                (&media.formats, &media.bandwidths),
                (&original.formats, &original.bandwidths)
            );
            assert_eq!(media.clock_rate(), original.clock_rate());
        }
        assert_eq!(parse(&sdp.to_bytes()), Ok(sdp), "{sample}");
    }
}

#[test]
fn describe_text() {
    let sdp = for_describe(&parse_str(FFMPEG), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    let text = sdp.to_string();
    assert!(text.starts_with(
        "v=0\r\no=- 0 0 IN IP4 10.1.2.3\r\ns=No Name\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
         a=tool:libavformat 59.27.100\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\nb=AS:200\r\n"
    ));
    assert!(text.contains("a=control:trackID=0\r\nm=audio 0 RTP/AVP 97\r\n"));
    assert!(text.ends_with("a=control:trackID=1\r\n"));
    // The camera's multicast port and media c= lines are gone.
    let camera = for_describe(&parse_str(MULTICAST), IpAddr::V4(Ipv4Addr::LOCALHOST)).to_string();
    assert!(camera.contains("m=video 0 RTP/AVP 96\r\n"), "{camera}");
    assert!(!camera.contains("224.2.1.1"));
}

#[test]
fn describe_ipv6_and_defaults() {
    let sdp = for_describe(&SessionDescription::default(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(
        sdp.to_string(),
        "v=0\r\no=- 0 0 IN IP6 ::1\r\ns=Stream\r\nc=IN IP6 ::\r\nt=0 0\r\na=control:*\r\n"
    );
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped());
    let sdp = for_describe(&parse_str(GSTREAMER), mapped);
    assert_eq!(sdp.origin.as_deref(), Some("- 0 0 IN IP4 192.0.2.9"));
    // A camera with r= lines and a blank name.
    let odd = parse_str("v=0\ns= \nt=1 2\nr=7d 1h 0 25h\nm=video 0 RTP/AVP 96\nc=IN IP4 0.0.0.0\nc=IN IP4 1.2.3.4\n");
    assert_eq!(odd.medias[0].other_lines, [('c', "IN IP4 1.2.3.4".to_owned())]);
    let sdp = for_describe(&odd, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(
        (sdp.session_name.as_deref(), sdp.other_lines.clone()),
        (Some("Stream"), t00())
    );
    assert!(sdp.medias[0].other_lines.is_empty());
}

#[test]
fn defaults_when_written() {
    let text = SessionDescription::default().to_string();
    assert_eq!(text, "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=Stream\r\nt=0 0\r\n");
    let sdp = parse_str("v=0\nm=audio 0 RTP/AVP 8\n");
    assert_eq!(sdp.origin.as_deref(), Some(DEFAULT_ORIGIN));
    assert_eq!(sdp.session_name.as_deref(), Some(DEFAULT_SESSION_NAME));
    assert_eq!(sdp.other_lines, t00());
    assert_eq!(sdp.medias[0].clock_rate(), Some(8000));
}

#[test]
fn written_values_cannot_inject_lines() {
    let mut sdp = SessionDescription {
        session_name: Some("evil\r\nm=video 1 RTP/AVP 1".into()),
        ..Default::default()
    };
    let mut media = MediaDescription::new("video", 0, "RTP/AVP", vec!["96".into()]);
    media.set_control("x\ny=1");
    sdp.medias.push(media);
    sdp.other_lines.push(('m', "video 2 RTP/AVP 2".into()));
    let parsed = parse(&sdp.to_bytes()).unwrap();
    assert_eq!(parsed.medias.len(), 1);
    assert_eq!(parsed.medias[0].control(), Some("xy=1"));
}

#[test]
fn lenient_forms() {
    // Version after other session lines, BOM, tabs, blank lines with spaces, no final newline.
    let sdp = parse_str("\u{feff}o=- 1 1 IN IP4 1.1.1.1\r\n   \r\nv=0\r\ns=\tx\r\nm=video  0   RTP/AVP  96 97");
    assert_eq!(sdp.session_name.as_deref(), Some("\tx"));
    assert_eq!(sdp.medias[0].formats, ["96", "97"]);
    // Repeated v=0, repeated o= kept aside, a media with no formats, a value with colons.
    let sdp = parse_str("v=0\no=a\no=b\nv=0\nm=text 9 TCP\na=x:y:z\n");
    assert_eq!(sdp.origin.as_deref(), Some("a"));
    assert!(sdp.other_lines.contains(&('o', "b".to_owned())));
    assert!(sdp.medias[0].formats.is_empty());
    assert_eq!(sdp.medias[0].attribute("X"), Some("y:z"));
    assert_eq!(sdp.medias[0].payload_type(), None);
    assert_eq!(sdp.medias[0].clock_rate(), None);
    assert_eq!(parse(&sdp.to_bytes()), Ok(sdp));
}

#[test]
fn control_replaced_or_added() {
    let mut media = MediaDescription::new("audio", 0, "RTP/AVP", vec!["0".into()]);
    assert_eq!(media.control(), None);
    media.set_control("trackID=0");
    assert_eq!(media.attributes, [Attribute::new("control", "trackID=0")]);
    media.attributes.insert(0, Attribute::flag("sendonly"));
    media.attributes.push(Attribute::new("Control", "dup"));
    media.set_control("trackID=5");
    assert_eq!(
        media.attributes,
        [Attribute::flag("sendonly"), Attribute::new("control", "trackID=5")]
    );
}

#[test]
fn rtpmap_forms() {
    assert_eq!(
        RtpMap::parse("97 MPEG4-GENERIC/48000/2"),
        Some(rtpmap(97, "MPEG4-GENERIC", 48000, Some(2)))
    );
    assert_eq!(RtpMap::parse("  8  PCMA/8000"), Some(rtpmap(8, "PCMA", 8000, None)));
    for bad in [
        "",
        "96",
        "96 H264",
        "96 /90000",
        "128 X/1",
        "96 H264/x",
        "96 H264/1/2/3",
        "96 A/1 extra",
    ] {
        assert_eq!(RtpMap::parse(bad), None, "{bad:?}");
    }
    let mut media = MediaDescription::new("video", 0, "RTP/AVP", vec!["96".into()]);
    media.attributes.push(Attribute::new("rtpmap", "96 broken"));
    media.attributes.push(Attribute::new("RTPMAP", "96 VP8/90000"));
    assert_eq!(media.clock_rate(), Some(90000));
    media.formats = vec!["200".into()];
    assert_eq!((media.payload_type(), media.clock_rate()), (None, None));
}

#[test]
fn static_payload_types() {
    let rates = [
        (0, 8000),
        (3, 8000),
        (4, 8000),
        (8, 8000),
        (9, 8000),
        (10, 44100),
        (11, 44100),
    ];
    let video = [(14, 90000), (26, 90000), (32, 90000), (33, 90000), (34, 90000)];
    for (pt, rate) in rates.into_iter().chain(video) {
        assert_eq!(static_rtpmap(pt).map(|m| m.clock_rate), Some(rate), "{pt}");
    }
    assert_eq!(static_rtpmap(10).and_then(|m| m.channels), Some(2));
    for pt in [1, 2, 19, 35, 96, 127, 255] {
        assert_eq!(static_rtpmap(pt), None, "{pt}");
    }
}

#[test]
fn errors() {
    assert_eq!(parse(b""), Err(SdpError::MissingVersion));
    assert_eq!(parse(b"\r\n\n  \n"), Err(SdpError::MissingVersion));
    assert_eq!(parse(b"o=- 0 0 IN IP4 1.1.1.1\ns=x\n"), Err(SdpError::MissingVersion));
    assert_eq!(
        parse(b"s=x\nm=video 0 RTP/AVP 96\nv=0\n"),
        Err(SdpError::MissingVersion)
    );
    assert_eq!(parse(b"v=1\n"), Err(SdpError::BadVersion { line: 1 }));
    let bad_port = b"v=0\r\no=- 0 0 IN IP4 1.1.1.1\r\nm=video abc RTP/AVP 96\r\n";
    assert_eq!(parse(bad_port), Err(SdpError::BadMediaLine { line: 3 }));
    for m in [
        "m=video",
        "m=video 0",
        "m=video 70000 RTP/AVP 96",
        "m=video 0/x RTP/AVP 96",
        "m=video /2 RTP/AVP",
    ] {
        let text = format!("v=0\n\n{m}\n");
        assert_eq!(parse(text.as_bytes()), Err(SdpError::BadMediaLine { line: 3 }), "{m}");
    }
    for line in ["hello", "=x", "a", "V=0", "ab=c", " a=x", "a=x\ry", "a=\u{0}"] {
        let text = format!("v=0\n{line}\n");
        assert_eq!(
            parse(text.as_bytes()),
            Err(SdpError::MalformedLine { line: 2 }),
            "{line:?}"
        );
    }
    assert_eq!(parse(b"v=0\ns=\xff\xfe\n"), Err(SdpError::NotUtf8 { line: 2 }));
    assert!(parse(&[0x89, b'P', b'N', b'G', 0, 0, 0x1a, 0xff, b'\n', 7]).is_err());
    assert!(parse(b"\x00\x01\x02\x03v=0").is_err());
    assert_eq!(
        SdpError::BadMediaLine { line: 3 }.to_string(),
        "SDP line 3 is not a valid m= line"
    );
}

#[test]
fn limits() {
    let mut big = b"v=0\n".to_vec();
    big.resize(MAX_INPUT_LEN, b'\n');
    assert!(parse(&big).is_ok());
    big.push(b'\n');
    assert_eq!(parse(&big), Err(SdpError::TooLarge));
    // Under the limit with LF endings, over it once written with CRLF: refused, so that whatever
    // parses can be written and parsed again.
    let lines = "v=0\nx=\n".to_owned() + &"x=\n".repeat(40_000);
    assert!(lines.len() <= MAX_INPUT_LEN);
    assert_eq!(parse(lines.as_bytes()), Err(SdpError::TooLarge));
    let long_line = format!("v=0\na={}\n", "x".repeat(MAX_INPUT_LEN - 7));
    assert_eq!(long_line.len(), MAX_INPUT_LEN);
    assert_eq!(parse(long_line.as_bytes()), Err(SdpError::TooLarge));
    let fits = format!("v=0\r\no=o\r\ns=s\r\nt=0 0\r\na={}\r\n", "x".repeat(MAX_INPUT_LEN - 26));
    assert_eq!(fits.len(), MAX_INPUT_LEN);
    assert_eq!(parse(fits.as_bytes()).map(|s| s.to_string()), Ok(fits));

    let with_medias = |n: usize| "v=0\n".to_owned() + &"m=audio 0 RTP/AVP 0\n".repeat(n);
    assert_eq!(
        parse(with_medias(MAX_MEDIAS).as_bytes()).map(|s| s.medias.len()),
        Ok(MAX_MEDIAS)
    );
    assert_eq!(
        parse(with_medias(MAX_MEDIAS + 1).as_bytes()),
        Err(SdpError::TooManyMedias)
    );

    let with_attributes =
        |n: usize| "v=0\n".to_owned() + &"a=x\n".repeat(n) + "m=video 0 RTP/AVP 96\n" + &"a=y\n".repeat(n);
    assert!(parse(with_attributes(MAX_ATTRIBUTES).as_bytes()).is_ok());
    assert_eq!(
        parse(with_attributes(MAX_ATTRIBUTES + 1).as_bytes()),
        Err(SdpError::TooLarge)
    );
    let media_only = "v=0\nm=video 0 RTP/AVP 96\n".to_owned() + &"a=y\n".repeat(MAX_ATTRIBUTES + 1);
    assert_eq!(parse(media_only.as_bytes()), Err(SdpError::TooLarge));
}
