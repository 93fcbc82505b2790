use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::proto::Method;

#[test]
fn cseq_accepts_spaces_and_refuses_non_numbers() {
    assert_eq!(CSeq::parse(" 42 "), Ok(CSeq(42)));
    assert!(CSeq::parse("").is_err());
    assert!(CSeq::parse("-1").is_err());
    assert!(CSeq::parse("4294967296").is_err());
}

#[test]
fn session_header_carries_id_and_timeout() {
    assert_eq!(
        SessionHeader::parse("12345678;timeout=60"),
        Ok(SessionHeader {
            id: "12345678".into(),
            timeout: Some(60)
        })
    );
    assert_eq!(
        SessionHeader::parse(" abc ; timeout = 5").map(|s| s.timeout),
        Ok(Some(5))
    );
    assert!(SessionHeader::parse("").is_err());
    assert!(SessionHeader::parse(";timeout=5").is_err());
    assert!(SessionHeader::parse("a;timeout=x").is_err());
    assert_eq!(
        SessionHeader {
            id: "s1".into(),
            timeout: Some(55)
        }
        .encode(),
        "s1;timeout=55"
    );
}

#[test]
fn ffmpeg_tcp_record_transport_is_understood() {
    let t = Transport::parse("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record").unwrap();
    assert_eq!(t.profile, Some(Profile::Avp));
    assert_eq!(t.lower, Some(LowerTransport::Tcp));
    assert_eq!(t.delivery, Some(Delivery::Unicast));
    assert_eq!(t.interleaved, Some((0, 1)));
    assert!(t.is_record());
}

#[test]
fn gstreamer_offers_several_alternatives_in_order() {
    let value = "RTP/AVP;unicast;client_port=58318-58319,RTP/AVP/UDP;multicast;port=5000-5001;ttl=16,RTP/AVP/TCP;unicast;interleaved=0-1";
    let Transports(offers) = Transports::parse(value).unwrap();
    assert_eq!(offers.len(), 3);
    assert_eq!(offers[0].lower_transport(), LowerTransport::Udp);
    assert_eq!(offers[0].client_port, Some((58318, 58319)));
    assert!(offers[1].is_multicast());
    assert_eq!((offers[1].port, offers[1].ttl), (Some((5000, 5001)), Some(16)));
    assert_eq!(offers[2].interleaved, Some((0, 1)));
}

#[test]
fn server_transport_with_padded_ssrc_and_quoted_mode() {
    let t =
        Transport::parse("RTP/AVP;unicast;client_port=8000-8001;server_port=9000-9001;ssrc=  0012ABCD;mode=\"PLAY\"")
            .unwrap();
    assert_eq!(t.ssrc, Some(0x0012_ABCD));
    assert_eq!(t.server_port, Some((9000, 9001)));
    assert_eq!(t.mode, Some(TransportMode::Play));
    let t = Transport::parse("RTP/AVP;unicast;client_port=8000;ssrc=ABC").unwrap();
    assert_eq!(t.client_port, Some((8000, 8001)));
    assert_eq!(t.ssrc, Some(0xABC));
}

#[test]
fn multicast_answer_with_destination_and_srtp_profile() {
    let t = Transport::parse("RTP/AVP;multicast;destination=224.1.0.1;port=8002-8003;ttl=127").unwrap();
    assert_eq!(t.destination.as_deref(), Some("224.1.0.1"));
    assert_eq!(
        Transport::parse("RTP/SAVP;unicast;client_port=1-2").unwrap().profile,
        Some(Profile::Savp)
    );
}

#[test]
fn unknown_profiles_are_skipped_but_bad_values_refused() {
    let Transports(offers) = Transports::parse("RAW/RAW/UDP;unicast,RTP/AVP/TCP;interleaved=2-3").unwrap();
    assert_eq!(offers.len(), 1);
    assert!(Transports::parse("RAW/RAW/UDP;unicast").is_err());
    assert!(Transports::parse("").is_err());
    assert!(Transport::parse("RTP/AVP;client_port=a-b").is_err());
    assert!(Transport::parse("RTP/AVP;client_port=70000").is_err());
    assert!(Transport::parse("RTP/AVP/TCP;interleaved=255").is_err());
    assert!(Transport::parse("RTP/AVP;ttl=300").is_err());
    assert!(Transport::parse("RTP/AVP;ssrc=123456789").is_err());
    assert!(Transport::parse("RTP/AVP;mode=teleport").is_err());
    assert!(Transport::parse("garbage").is_err());
}

#[test]
fn rtp_info_lists_each_track() {
    let value = "url=rtsp://h/p/trackID=0;seq=17;rtptime=3000,url=rtsp://h/p/trackID=1;seq=5";
    let RtpInfo(entries) = RtpInfo::parse(value).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!((entries[0].seq, entries[0].rtptime), (Some(17), Some(3000)));
    assert_eq!(
        (entries[1].url.as_str(), entries[1].rtptime),
        ("rtsp://h/p/trackID=1", None)
    );
    assert_eq!(RtpInfo::parse(value).unwrap().encode(), value);
    assert!(RtpInfo::parse("seq=1").is_err());
}

#[test]
fn npt_ranges() {
    assert_eq!(
        Range::parse("npt=0.000-"),
        Ok(Range {
            start: NptTime::At(Duration::ZERO),
            end: None
        })
    );
    assert_eq!(Range::parse("npt=now-").map(|r| r.start), Ok(NptTime::Now));
    assert_eq!(
        Range::parse("npt=1:02:03.5-1:02:04"),
        Ok(Range {
            start: NptTime::At(Duration::from_millis(3_723_500)),
            end: Some(NptTime::At(Duration::from_secs(3724)))
        })
    );
    assert!(Range::parse("smpte=0:10:20-").is_err());
    assert!(Range::parse("npt=abc-").is_err());
    assert!(Range::parse("npt=-1e999").is_err());
    assert_eq!(
        Range {
            start: NptTime::At(Duration::from_millis(1500)),
            end: None
        }
        .encode(),
        "npt=1.500-"
    );
}

#[test]
fn public_lists_methods() {
    let Public(methods) = Public::parse("OPTIONS, DESCRIBE,SETUP , PLAY").unwrap();
    assert_eq!(
        methods,
        vec![Method::Options, Method::Describe, Method::Setup, Method::Play]
    );
    assert_eq!(Public(methods).encode(), "OPTIONS, DESCRIBE, SETUP, PLAY");
}

#[test]
fn content_headers() {
    assert!(ContentType::parse("Application/SDP").unwrap().is_sdp());
    assert!(ContentType::parse("application/sdp; charset=utf-8").unwrap().is_sdp());
    assert!(!ContentType::parse("text/parameters").unwrap().is_sdp());
    assert!(ContentType::parse("sdp").is_err());
    assert_eq!(ContentLength::parse("12"), Ok(ContentLength(12)));
    assert!(ContentLength::parse("1x").is_err());
    assert_eq!(
        ContentBase::parse("rtsp://h/p/").map(|b| b.0),
        Ok("rtsp://h/p/".to_owned())
    );
}

#[test]
fn auth_headers_wrap_the_auth_codec() {
    let w = WwwAuthenticate::parse("Digest realm=\"shardcast\", nonce=\"abc\"").unwrap();
    assert_eq!(WwwAuthenticate::parse(&w.encode()), Ok(w));
    let a = AuthorizationHeader::parse("Basic dXNlcjpwYXNz").unwrap();
    assert_eq!(AuthorizationHeader::parse(&a.encode()), Ok(a));
    assert!(AuthorizationHeader::parse("Bearer x").is_err());
}

fn arb_pair<T: Arbitrary + Copy>() -> impl Strategy<Value = Option<(T, T)>> {
    prop::option::of(any::<(T, T)>())
}

prop_compose! {
    fn arb_transport()(
        profile in prop::sample::select(vec![Profile::Avp, Profile::Savp]),
        lower in prop::option::of(prop::sample::select(vec![LowerTransport::Udp, LowerTransport::Tcp])),
        delivery in prop::option::of(prop::sample::select(vec![Delivery::Unicast, Delivery::Multicast])),
        destination in prop::option::of("[0-9]{1,3}(\\.[0-9]{1,3}){3}"),
        interleaved in arb_pair::<u8>(),
        ttl in any::<Option<u8>>(),
        ports in (arb_pair::<u16>(), arb_pair::<u16>(), arb_pair::<u16>()),
        ssrc in any::<Option<u32>>(),
        mode in prop::option::of(prop::sample::select(vec![TransportMode::Play, TransportMode::Record])),
    ) -> Transport {
        Transport {
            profile: Some(profile), lower, delivery, destination, source: None, interleaved, ttl,
            port: ports.0, client_port: ports.1, server_port: ports.2, ssrc, mode,
        }
    }
}

proptest! {
    #[test]
    fn transport_list_round_trips(offers in prop::collection::vec(arb_transport(), 1..4)) {
        let header = Transports(offers);
        prop_assert_eq!(Transports::parse(&header.encode()), Ok(header));
    }

    #[test]
    fn session_round_trips(id in "[A-Za-z0-9$_.+-]{1,40}", timeout in any::<Option<u32>>()) {
        let header = SessionHeader { id, timeout };
        prop_assert_eq!(SessionHeader::parse(&header.encode()), Ok(header));
    }

    #[test]
    fn rtp_info_round_trips(entries in prop::collection::vec(("rtsp://h/[a-z]{1,8}/trackID=[0-9]", any::<Option<u16>>(), any::<Option<u32>>()), 1..4)) {
        let header = RtpInfo(entries.into_iter().map(|(url, seq, rtptime)| RtpInfoEntry { url, seq, rtptime }).collect());
        prop_assert_eq!(RtpInfo::parse(&header.encode()), Ok(header));
    }

    #[test]
    fn arbitrary_values_never_panic(value in "\\PC{0,120}") {
        let _ = Transports::parse(&value);
        let _ = SessionHeader::parse(&value);
        let _ = RtpInfo::parse(&value);
        let _ = Range::parse(&value);
        let _ = ContentType::parse(&value);
        let _ = Public::parse(&value);
        let _ = CSeq::parse(&value);
    }
}
