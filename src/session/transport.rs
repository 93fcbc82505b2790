//! Choosing a transport for SETUP from the alternatives a client offers (DESIGN.md §2).
//!
//! The first alternative the server supports wins. Interleaved channels are per connection: a
//! requested pair must be `a, a+1` and free; with none requested, the lowest free even pair is used.

use crate::proto::headers::{Delivery, LowerTransport, Profile, Transport, TransportMode};

/// What the server can offer, from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportSupport {
    /// Unicast UDP is configured.
    pub udp: bool,
    /// Multicast is configured.
    pub multicast: bool,
}

/// The transport chosen for one media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    /// Interleaved in the RTSP connection on channels (rtp, rtcp).
    Tcp {
        /// RTP channel; RTCP is the next one.
        rtp_channel: u8,
    },
    /// Unicast UDP to the client's (rtp, rtcp) ports.
    Udp {
        /// The client's RTP and RTCP ports.
        client_ports: (u16, u16),
    },
    /// UDP multicast to a group the server allocates.
    Multicast,
}

/// Why no alternative was acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    /// None of the offered transports is supported: 461 Unsupported Transport.
    #[error("none of the offered transports is supported")]
    Unsupported,
    /// The client's choice is malformed (bad channel pair, UDP without client_port): 400.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Picks a transport for a media of a session that is `recording` or not, given the interleaved
/// channels already used on the connection (`used(ch)`).
pub fn negotiate(
    offers: &[Transport],
    support: TransportSupport,
    recording: bool,
    used: impl Fn(u8) -> bool,
) -> Result<(Chosen, &Transport), NegotiateError> {
    for offer in offers {
        if offer.profile() != Profile::Avp {
            continue; // SRTP is not supported.
        }
        let multicast = offer.delivery == Some(Delivery::Multicast);
        let wants_record = offer.mode == Some(TransportMode::Record);
        if wants_record != recording {
            // A publisher's SETUP must say mode=record; a reader's must not.
            return Err(NegotiateError::Invalid(if recording {
                "a publisher's Transport must have mode=record"
            } else {
                "mode=record on a session that did not ANNOUNCE"
            }));
        }
        match (offer.lower_transport(), multicast) {
            (LowerTransport::Tcp, false) => {
                let rtp_channel = match offer.interleaved {
                    Some((rtp, rtcp)) => {
                        if u16::from(rtcp) != u16::from(rtp) + 1 {
                            return Err(NegotiateError::Invalid("interleaved channels must be consecutive"));
                        }
                        if used(rtp) || used(rtcp) {
                            return Err(NegotiateError::Invalid("interleaved channels already in use"));
                        }
                        rtp
                    }
                    None => (0..=254u8)
                        .step_by(2)
                        .find(|&c| !used(c) && !used(c + 1))
                        .ok_or(NegotiateError::Invalid("no free interleaved channels"))?,
                };
                return Ok((Chosen::Tcp { rtp_channel }, offer));
            }
            (LowerTransport::Udp, false) if support.udp => {
                let client_ports = offer
                    .client_port
                    .ok_or(NegotiateError::Invalid("UDP transport without client_port"))?;
                return Ok((Chosen::Udp { client_ports }, offer));
            }
            (LowerTransport::Udp, true) if support.multicast && !recording => return Ok((Chosen::Multicast, offer)),
            _ => continue,
        }
    }
    Err(NegotiateError::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::headers::{Transports, TypedHeader};

    fn offers(text: &str) -> Vec<Transport> {
        Transports::parse(text).unwrap().0
    }

    const TCP_ONLY: TransportSupport = TransportSupport {
        udp: false,
        multicast: false,
    };

    #[test]
    fn the_first_supported_alternative_wins() {
        let o = offers("RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=4-5");
        let (chosen, _) = negotiate(&o, TCP_ONLY, false, |_| false).unwrap();
        assert_eq!(chosen, Chosen::Tcp { rtp_channel: 4 });
        let both = TransportSupport {
            udp: true,
            multicast: false,
        };
        let (chosen, _) = negotiate(&o, both, false, |_| false).unwrap();
        assert_eq!(
            chosen,
            Chosen::Udp {
                client_ports: (5000, 5001)
            }
        );
    }

    #[test]
    fn nothing_supported_is_461_material() {
        let o = offers("RTP/AVP;unicast;client_port=5000-5001");
        assert_eq!(
            negotiate(&o, TCP_ONLY, false, |_| false),
            Err(NegotiateError::Unsupported)
        );
        let o = offers("RTP/SAVP/TCP;unicast;interleaved=0-1");
        assert_eq!(
            negotiate(&o, TCP_ONLY, false, |_| false),
            Err(NegotiateError::Unsupported)
        );
    }

    #[test]
    fn missing_interleaved_gets_the_lowest_free_even_pair() {
        let o = offers("RTP/AVP/TCP;unicast");
        let (chosen, _) = negotiate(&o, TCP_ONLY, false, |c| c < 2).unwrap();
        assert_eq!(chosen, Chosen::Tcp { rtp_channel: 2 });
    }

    #[test]
    fn interleaved_pairs_must_be_consecutive_and_free() {
        let o = offers("RTP/AVP/TCP;unicast;interleaved=0-2");
        assert!(matches!(
            negotiate(&o, TCP_ONLY, false, |_| false),
            Err(NegotiateError::Invalid(_))
        ));
        let o = offers("RTP/AVP/TCP;unicast;interleaved=0-1");
        assert!(matches!(
            negotiate(&o, TCP_ONLY, false, |c| c == 1),
            Err(NegotiateError::Invalid(_))
        ));
    }

    #[test]
    fn a_publisher_needs_mode_record_and_cannot_use_multicast() {
        let o = offers("RTP/AVP/TCP;unicast;interleaved=0-1");
        assert!(matches!(
            negotiate(&o, TCP_ONLY, true, |_| false),
            Err(NegotiateError::Invalid(_))
        ));
        let o = offers("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record");
        assert!(negotiate(&o, TCP_ONLY, true, |_| false).is_ok());
        let all = TransportSupport {
            udp: true,
            multicast: true,
        };
        let o = offers("RTP/AVP;multicast;mode=record");
        assert_eq!(negotiate(&o, all, true, |_| false), Err(NegotiateError::Unsupported));
    }

    #[test]
    fn udp_without_client_port_is_invalid() {
        let o = offers("RTP/AVP;unicast");
        let udp = TransportSupport {
            udp: true,
            multicast: false,
        };
        assert!(matches!(
            negotiate(&o, udp, false, |_| false),
            Err(NegotiateError::Invalid(_))
        ));
    }
}
