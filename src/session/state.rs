//! The RTSP session state machine (RFC 2326 appendix A, as gortsplib's server applies it).
//!
//! ```text
//! Initial --SETUP--> PrePlay --PLAY--> Play      (PAUSE: Play -> PrePlay)
//! Initial --ANNOUNCE--> PreRecord --RECORD--> Record (PAUSE: Record -> PreRecord)
//! ```
//!
//! A method in the wrong state is answered 455 Method Not Valid in This State (RFC 2326 §11.3.6);
//! gortsplib answers 400, but 455 tells the client what was wrong. See docs/decisions/0003-status-codes.md.

use std::fmt;

use crate::proto::Method;

/// Where an RTSP session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Created by the first SETUP or by ANNOUNCE, nothing decided yet.
    Initial,
    /// At least one media set up for reading; not playing.
    PrePlay,
    /// Packets flow to the client.
    Play,
    /// An SDP was announced; medias are being set up for publishing.
    PreRecord,
    /// The client publishes packets.
    Record,
}

impl SessionState {
    /// Whether the session reads a stream (PrePlay or Play).
    pub fn is_reader(self) -> bool {
        matches!(self, SessionState::PrePlay | SessionState::Play)
    }

    /// Whether the session publishes a stream (PreRecord or Record).
    pub fn is_publisher(self) -> bool {
        matches!(self, SessionState::PreRecord | SessionState::Record)
    }

    /// Whether media packets are flowing (Play or Record).
    pub fn is_streaming(self) -> bool {
        matches!(self, SessionState::Play | SessionState::Record)
    }

    /// The state after ANNOUNCE, which only a fresh session may receive.
    pub fn announce(self) -> Result<SessionState, StateError> {
        match self {
            SessionState::Initial => Ok(SessionState::PreRecord),
            _ => Err(self.refuse(Method::Announce)),
        }
    }

    /// The state after a SETUP; a publisher keeps setting up medias in PreRecord.
    pub fn setup(self) -> Result<SessionState, StateError> {
        match self {
            SessionState::Initial | SessionState::PrePlay => Ok(SessionState::PrePlay),
            SessionState::PreRecord => Ok(SessionState::PreRecord),
            SessionState::Play | SessionState::Record => Err(self.refuse(Method::Setup)),
        }
    }

    /// The state after PLAY; repeating PLAY while playing is allowed (some clients do, to seek).
    pub fn play(self) -> Result<SessionState, StateError> {
        match self {
            SessionState::PrePlay | SessionState::Play => Ok(SessionState::Play),
            _ => Err(self.refuse(Method::Play)),
        }
    }

    /// The state after RECORD.
    pub fn record(self) -> Result<SessionState, StateError> {
        match self {
            SessionState::PreRecord => Ok(SessionState::Record),
            _ => Err(self.refuse(Method::Record)),
        }
    }

    /// The state after PAUSE: back to the matching Pre* state; pausing twice is fine.
    pub fn pause(self) -> Result<SessionState, StateError> {
        match self {
            SessionState::PrePlay | SessionState::Play => Ok(SessionState::PrePlay),
            SessionState::PreRecord | SessionState::Record => Ok(SessionState::PreRecord),
            SessionState::Initial => Err(self.refuse(Method::Pause)),
        }
    }

    fn refuse(self, method: Method) -> StateError {
        StateError { method, state: self }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionState::Initial => "initial",
            SessionState::PrePlay => "pre-play",
            SessionState::Play => "play",
            SessionState::PreRecord => "pre-record",
            SessionState::Record => "record",
        })
    }
}

/// A method that the session's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{method} is not valid in the {state} state")]
pub struct StateError {
    /// The refused method.
    pub method: Method,
    /// The state the session was in.
    pub state: SessionState,
}

#[cfg(test)]
mod tests {
    use super::SessionState::*;
    use super::*;

    #[test]
    fn a_reader_goes_setup_play_pause_play() {
        let s = Initial.setup().unwrap();
        assert_eq!(s, PrePlay);
        let s = s.setup().unwrap().play().unwrap();
        assert_eq!(s, Play);
        assert_eq!(s.play(), Ok(Play), "repeated PLAY is allowed");
        let s = s.pause().unwrap();
        assert_eq!((s, s.pause()), (PrePlay, Ok(PrePlay)), "repeated PAUSE is allowed");
        assert_eq!(s.play(), Ok(Play));
    }

    #[test]
    fn a_publisher_goes_announce_setup_record_pause() {
        let s = Initial.announce().unwrap().setup().unwrap().setup().unwrap();
        assert_eq!(s, PreRecord);
        let s = s.record().unwrap();
        assert!(s.is_publisher() && s.is_streaming());
        assert_eq!(s.pause(), Ok(PreRecord));
    }

    #[test]
    fn methods_in_the_wrong_state_are_refused_with_method_and_state() {
        assert_eq!(
            Initial.play(),
            Err(StateError {
                method: Method::Play,
                state: Initial
            })
        );
        assert!(Initial.record().is_err());
        assert!(Initial.pause().is_err());
        assert!(PrePlay.record().is_err());
        assert!(PreRecord.play().is_err());
        assert!(Play.setup().is_err());
        assert!(Record.setup().is_err());
        assert!(PrePlay.announce().is_err());
        let e = Play.setup().unwrap_err();
        assert_eq!(e.to_string(), "SETUP is not valid in the play state");
    }
}
