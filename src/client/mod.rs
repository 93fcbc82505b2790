//! An RTSP client on glommio: plays (DESCRIBE, SETUP, PLAY) and records (ANNOUNCE, SETUP, RECORD)
//! over TCP interleaved, UDP unicast or UDP multicast transport.
//!
//! The edge server pulls streams from an origin with it and the load generator runs thousands of
//! them per core, so a client is one struct driven by its owner's task: no threads, no tasks of its
//! own, no blocking, and no allocation per received packet ([`Client::read_packet`] lends each
//! packet out of a reused buffer). While the owner waits in [`Client::read_packet`] the client
//! sends keepalive requests and, over UDP, RTCP receiver reports on schedule.
//!
//! Every request carries `CSeq`, `User-Agent` and, once the server gave one, `Session`. Credentials
//! in the URL (`rtsp://user:password@host/path`) are taken out of the request URLs and used to answer
//! a 401: the strongest challenge offered (Digest SHA-256, then Digest MD5, then Basic) is answered
//! once, and reused for every later request.
//!
//! # Example
//!
//! Reading a stream over UDP on a glommio executor:
//!
//! ```no_run
//! use shardcast::client::{Client, ClientConfig, ClientTransport};
//!
//! glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
//!     .io_memory(64 * 1024)
//!     .make()?
//!     .run(async {
//!         let config = ClientConfig { transport: ClientTransport::Udp, ..ClientConfig::default() };
//!         let mut client = Client::connect("rtsp://user:pass@127.0.0.1:8554/live", config).await?;
//!         let description = client.describe().await?;
//!         println!("{} tracks", description.medias.len());
//!         client.setup_all().await?;
//!         client.play().await?;
//!         for _ in 0..100 {
//!             let packet = client.read_packet().await?;
//!             println!("track {} rtcp {} {} bytes", packet.track, packet.is_rtcp, packet.data.len());
//!         }
//!         println!("{:?}", client.stats());
//!         client.teardown().await
//!     })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod connection;
mod error;
mod media;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;

pub use config::{ClientConfig, ClientTransport};
pub use error::{ClientError, Result};
pub use media::{ReceivedPacket, TrackStats};

use crate::proto::headers::{
    ContentBase, Delivery, LowerTransport, Profile, RtpInfo, RtpInfoEntry, Transport, TransportMode, TypedHeader,
};
use crate::proto::rtsp::StatusCode;
use crate::proto::sdp::{self, SessionDescription};
use crate::proto::url::join_control;
use crate::proto::Method;
use crate::runtime::connect::{bind_udp_multicast, bind_udp_pair};
use connection::{parse_url, Connection};
use media::{Media, Track, TrackTransport, MAX_UDP_TRACKS};

/// What the server said in answer to PLAY.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlayInfo {
    /// The `RTP-Info` entries: where each track's stream starts (empty when the header is absent).
    pub rtp_info: Vec<RtpInfoEntry>,
    /// The `Range` header as sent, e.g. `npt=0.000-`.
    pub range: Option<String>,
}

/// An RTSP client connection and the session it sets up.
///
/// Must be created and used on a glommio executor thread.
pub struct Client {
    config: ClientConfig,
    conn: Connection,
    /// The URL controls resolve against: `Content-Base` of DESCRIBE, else the request URL.
    base: String,
    description: Option<SessionDescription>,
    recording: bool,
    media: Media,
}

impl Client {
    /// Connects to the server of `url` (`rtsp://[user[:password]@]host[:port]/path`), waiting at most
    /// `config.read_timeout`. No request is sent yet.
    ///
    /// Host names are resolved with the system resolver, which blocks: pass an IP address where that
    /// matters.
    pub async fn connect(url: &str, config: ClientConfig) -> Result<Client> {
        let parsed = parse_url(url)?;
        let conn = Connection::open(
            parsed,
            config.user_agent.clone(),
            config.read_timeout,
            config.write_timeout,
        )
        .await?;
        let media = Media::new(
            config.transport,
            config.read_timeout,
            config.keepalive_interval,
            config.receiver_report_interval,
        );
        Ok(Client {
            base: conn.url.clone(),
            config,
            conn,
            description: None,
            recording: false,
            media,
        })
    }

    /// The URL requests go to, without credentials.
    pub fn url(&self) -> &str {
        &self.conn.url
    }

    /// The local address of the RTSP connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.conn.local_addr
    }

    /// The session id, once SETUP (or ANNOUNCE) created a session.
    pub fn session_id(&self) -> Option<&str> {
        self.conn.session.as_deref()
    }

    /// The session description from [`Self::describe`] or [`Self::announce`].
    pub fn description(&self) -> Option<&SessionDescription> {
        self.description.as_ref()
    }

    /// OPTIONS: the methods the server lists in `Public`. Also tells the keepalive whether
    /// GET_PARAMETER is available.
    pub async fn options(&mut self) -> Result<Vec<Method>> {
        let url = self.conn.url.clone();
        let response = self.conn.request(Method::Options, &url, &[], &[]).await?;
        let public = response
            .headers
            .get("Public")
            .and_then(|v| crate::proto::headers::Public::parse(v).ok())
            .map(|p| p.0)
            .unwrap_or_default();
        Ok(public)
    }

    /// DESCRIBE: the stream's session description. Its `Content-Base` (or the request URL) becomes
    /// the base the tracks' controls resolve against.
    pub async fn describe(&mut self) -> Result<SessionDescription> {
        let url = self.conn.url.clone();
        let response = self
            .conn
            .request(Method::Describe, &url, &[("Accept", "application/sdp")], &[])
            .await?;
        let description = sdp::parse(&response.body)?;
        let base = response
            .headers
            .get("Content-Base")
            .or_else(|| response.headers.get("Content-Location"))
            .and_then(|v| ContentBase::parse(v).ok())
            .map_or(url, |b| b.0);
        self.base = base;
        self.description = Some(description.clone());
        self.recording = false;
        Ok(description)
    }

    /// ANNOUNCE: publishes `description` at the URL, to be followed by SETUP and RECORD. Medias
    /// without an `a=control` get `trackID=N`.
    pub async fn announce(&mut self, description: &SessionDescription) -> Result<()> {
        let mut description = description.clone();
        for (i, media) in description.medias.iter_mut().enumerate() {
            if media.control().is_none() {
                media.set_control(&format!("trackID={i}"));
            }
        }
        let url = self.conn.url.clone();
        let body = description.to_bytes();
        self.conn
            .request(Method::Announce, &url, &[("Content-Type", "application/sdp")], &body)
            .await?;
        self.base = url;
        self.description = Some(description);
        self.recording = true;
        Ok(())
    }

    /// SETUP of every media of the description, in order.
    pub async fn setup_all(&mut self) -> Result<()> {
        let count = self.description.as_ref().map_or(0, |d| d.medias.len());
        for track in 0..count {
            self.setup(track).await?;
        }
        Ok(())
    }

    /// SETUP of media `track` of the description, with the configured transport: TCP channels
    /// `2*track` and `2*track+1`; UDP on an even/odd port pair of the connection's local IP; or
    /// multicast, joining the group and ports of the answer.
    pub async fn setup(&mut self, track: usize) -> Result<()> {
        let description = self
            .description
            .as_ref()
            .ok_or_else(|| ClientError::Protocol("SETUP before DESCRIBE or ANNOUNCE".into()))?;
        let media = description.medias.get(track).ok_or_else(|| {
            ClientError::Protocol(format!(
                "no track {track}: the description has {} medias",
                description.medias.len()
            ))
        })?;
        if self.media.tracks.iter().any(|t| t.index == track) {
            return Err(ClientError::Protocol(format!("track {track} is already set up")));
        }
        let url = join_control(&self.base, media.control().unwrap_or(""));
        let clock_rate = media.clock_rate().unwrap_or(0);
        let transport = self.config.transport;
        if transport != ClientTransport::Tcp && self.media.next_udp_slot() >= MAX_UDP_TRACKS {
            return Err(ClientError::Protocol(format!("more than {MAX_UDP_TRACKS} UDP tracks")));
        }
        if transport == ClientTransport::UdpMulticast && self.recording {
            return Err(ClientError::UnsupportedTransport);
        }
        let mut offer = Transport {
            profile: Some(Profile::Avp),
            delivery: Some(Delivery::Unicast),
            mode: self.recording.then_some(TransportMode::Record),
            ..Transport::default()
        };
        let mut sockets = None;
        match transport {
            ClientTransport::Tcp => {
                let channel = u8::try_from(2 * track).map_err(|_| ClientError::Protocol("too many tracks".into()))?;
                offer.lower = Some(LowerTransport::Tcp);
                offer.interleaved = Some((channel, channel + 1));
            }
            ClientTransport::Udp => {
                let (rtp, rtcp) = bind_udp_pair(self.conn.local_addr.ip())?;
                offer.client_port = Some((rtp.local_addr()?.port(), rtcp.local_addr()?.port()));
                sockets = Some((rtp, rtcp));
            }
            ClientTransport::UdpMulticast => offer.delivery = Some(Delivery::Multicast),
        }
        let encoded = offer.encode();
        let response = self
            .conn
            .request(Method::Setup, &url, &[("Transport", &encoded)], &[])
            .await
            .map_err(|e| match e {
                ClientError::Status {
                    status: StatusCode::UNSUPPORTED_TRANSPORT,
                    ..
                } => ClientError::UnsupportedTransport,
                e => e,
            })?;
        let answer = response
            .headers
            .get("Transport")
            .ok_or_else(|| ClientError::Protocol("the SETUP response has no Transport header".into()))
            .and_then(|v| Transport::parse(v).map_err(|e| ClientError::Protocol(e.to_string())))?;
        let peer = self.conn.peer_addr.ip();
        let track_transport = match transport {
            ClientTransport::Tcp => {
                if answer.lower_transport() != LowerTransport::Tcp {
                    return Err(ClientError::Protocol(format!(
                        "SETUP asked for TCP, the server answered {}",
                        answer.encode()
                    )));
                }
                let (rtp, rtcp) = answer.interleaved.or(offer.interleaved).unwrap_or_default();
                TrackTransport::Tcp { rtp, rtcp }
            }
            ClientTransport::Udp => {
                if answer.lower_transport() != LowerTransport::Udp || answer.is_multicast() {
                    return Err(ClientError::Protocol(format!(
                        "SETUP asked for unicast UDP, the server answered {}",
                        answer.encode()
                    )));
                }
                let source = answer
                    .source
                    .as_deref()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .unwrap_or(peer);
                TrackTransport::Udp {
                    slot: self.media.next_udp_slot(),
                    server_rtp: answer.server_port.map(|(p, _)| SocketAddr::new(source, p)),
                    server_rtcp: answer.server_port.map(|(_, p)| SocketAddr::new(source, p)),
                    source: Some(source),
                }
            }
            ClientTransport::UdpMulticast => {
                let group = answer
                    .destination
                    .as_deref()
                    .and_then(|d| d.parse::<Ipv4Addr>().ok())
                    .filter(Ipv4Addr::is_multicast);
                let (Some(group), Some(ports)) = (group, answer.port) else {
                    return Err(ClientError::Protocol(format!(
                        "the multicast SETUP answer has no IPv4 group and ports: {}",
                        answer.encode()
                    )));
                };
                let interface = match self.conn.local_addr.ip() {
                    IpAddr::V4(ip) => ip,
                    IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                };
                sockets = Some(bind_udp_multicast(group, ports, interface)?);
                TrackTransport::Udp {
                    slot: self.media.next_udp_slot(),
                    server_rtp: Some(SocketAddr::from((group, ports.0))),
                    server_rtcp: Some(SocketAddr::from((group, ports.1))),
                    source: None,
                }
            }
        };
        self.media
            .add_track(Track::new(track, track_transport, clock_rate), sockets);
        Ok(())
    }

    /// The URL of aggregate requests: the session-level `a=control` resolved against the base.
    fn aggregate_url(&self) -> String {
        let control = self
            .description
            .as_ref()
            .and_then(|d| d.attributes.iter().find(|a| a.is("control")))
            .and_then(|a| a.value.as_deref());
        match control {
            Some(control) => join_control(&self.base, control),
            None => self.base.clone(),
        }
    }

    /// Sends OPTIONS unless a `Public` header was already seen, so that keepalives use a method the
    /// server supports from the first one (some servers, this one included, are not kept alive by
    /// OPTIONS). A server refusing OPTIONS is not an error: keepalives then use OPTIONS anyway.
    async fn learn_keepalive(&mut self) -> Result<()> {
        if self.conn.knows_keepalive() {
            return Ok(());
        }
        let url = self.conn.url.clone();
        match self.conn.request(Method::Options, &url, &[], &[]).await {
            Ok(_) | Err(ClientError::Status { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// PLAY from the start (`Range: npt=0.000-`); media then arrives through [`Self::read_packet`].
    /// Sent after an OPTIONS when [`Self::options`] was not called, to choose the keepalive.
    pub async fn play(&mut self) -> Result<PlayInfo> {
        self.learn_keepalive().await?;
        let url = self.aggregate_url();
        let response = self
            .conn
            .request(Method::Play, &url, &[("Range", "npt=0.000-")], &[])
            .await?;
        let rtp_info = response
            .headers
            .get("RTP-Info")
            .and_then(|v| RtpInfo::parse(v).ok())
            .map(|i| i.0)
            .unwrap_or_default();
        let range = response.headers.get("Range").map(str::to_owned);
        self.media.start(self.conn.session_timeout, url);
        Ok(PlayInfo { rtp_info, range })
    }

    /// RECORD: the server now accepts media sent with [`Self::write_packet`]. Sent after an OPTIONS
    /// when [`Self::options`] was not called, to choose the keepalive.
    pub async fn record(&mut self) -> Result<()> {
        self.learn_keepalive().await?;
        let url = self.aggregate_url();
        self.conn
            .request(Method::Record, &url, &[("Range", "npt=0.000-")], &[])
            .await?;
        self.media.start(self.conn.session_timeout, url);
        Ok(())
    }

    /// PAUSE. Keepalives are only sent from [`Self::read_packet`] and [`Self::write_packet`]: a
    /// client paused for longer than the session timeout should call [`Self::get_parameter`].
    pub async fn pause(&mut self) -> Result<()> {
        let url = self.aggregate_url();
        self.conn.request(Method::Pause, &url, &[], &[]).await?;
        Ok(())
    }

    /// GET_PARAMETER with an empty body (the usual keepalive); returns the response body.
    pub async fn get_parameter(&mut self) -> Result<Bytes> {
        let url = self.aggregate_url();
        let response = self.conn.request(Method::GetParameter, &url, &[], &[]).await?;
        Ok(response.body)
    }

    /// TEARDOWN, best effort: the session and its sockets are released here whatever the outcome,
    /// and an error (the server may already have gone) can be ignored, as the server times the
    /// session out anyway. Waits at most the configured timeouts.
    pub async fn teardown(&mut self) -> Result<()> {
        let url = self.aggregate_url();
        let result = match self.conn.session {
            Some(_) => self.conn.request(Method::Teardown, &url, &[], &[]).await.map(drop),
            None => Ok(()),
        };
        self.conn.session = None;
        self.media.clear();
        result
    }

    /// The next RTP or RTCP packet of any set-up track, borrowed from the client's buffer.
    ///
    /// Over TCP, responses to keepalives are consumed and requests from the server ignored; over UDP
    /// the RTP and RTCP sockets of every track are read (datagrams from other hosts than the server
    /// are dropped for unicast). While waiting, keepalives and (UDP) receiver reports go out on
    /// schedule. Nothing for `read_timeout` is [`ClientError::Timeout`].
    pub async fn read_packet(&mut self) -> Result<ReceivedPacket<'_>> {
        self.media.read(&mut self.conn).await
    }

    /// Sends one RTP (or RTCP) packet of `track` to the server: interleaved over TCP, or to the
    /// `server_port` of the SETUP answer over UDP. Also sends a keepalive when one is due.
    pub async fn write_packet(&mut self, track: usize, is_rtcp: bool, data: &[u8]) -> Result<()> {
        self.media.write(&mut self.conn, track, is_rtcp, data).await
    }

    /// Counters of each track of the description, by index (zeros for tracks not set up).
    pub fn stats(&self) -> Vec<TrackStats> {
        let medias = self.description.as_ref().map_or(0, |d| d.medias.len());
        self.media.stats(medias)
    }
}
