//! A reader slot: DESCRIBE, SETUP every track, PLAY, then count every packet until told to stop
//! (or, with churn, to leave and rejoin). A failed session is counted and retried after a pause, so
//! the load holds while the server recovers.

use std::rc::Rc;
use std::time::{Duration, Instant};

use shardcast::client::{Client, ClientError};
use shardcast::proto::rtp::RtpView;

use crate::core::{sleep_until, teardown, unless, Core, ReaderCtl};
use crate::plan::{client_transport, ReaderSpec};
use crate::stats::{error_kind, micros, ReaderReport, TrackAccount};
use shardcast_loadgen::synth::{self, TRAILER_LEN, TRAILER_MAGIC};

/// Pause before a failed session is retried.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How a session ended.
enum End {
    /// The run is over.
    Stopped,
    /// Churn: left, to rejoin at once.
    Churned,
    /// Failed; retry after a pause.
    Failed,
}

/// Runs one reader slot until the readers are told to stop.
pub async fn run(core: Rc<Core>, spec: ReaderSpec) -> ReaderReport {
    let mut report = ReaderReport {
        id: spec.id,
        core: core.index,
        url: core.plan.read_urls.get(spec.path).cloned().unwrap_or_default(),
        ..ReaderReport::default()
    };
    let stop = &core.stop_readers;
    if unless(stop, core.readers_go.wait()).await.is_none() {
        return report;
    }
    let at = core.shared.readers_epoch() + spec.delay;
    if unless(stop, sleep_until(at)).await.is_none() {
        return report;
    }
    let ctl = Rc::new(ReaderCtl::default());
    core.churn_targets.borrow_mut().push(ctl.clone());
    while !stop.is_set() {
        match session(&core, &spec, &ctl, &mut report).await {
            End::Stopped => break,
            End::Churned => {
                report.churned += 1;
                core.interval.borrow_mut().churned += 1;
            }
            End::Failed => {
                if unless(stop, glommio::timer::sleep(RETRY_DELAY)).await.is_none() {
                    break;
                }
            }
        }
    }
    if report.latency_samples > 0 {
        let mean = report.latency_sum_us as f64 / report.latency_samples as f64;
        report.latency_mean_us = Some((mean * 10.0).round() / 10.0);
    }
    report
}

/// Counters of one session.
struct Session {
    start: Instant,
    /// When PLAY was sent, in ns since the epoch: packets stamped earlier were not sent live to us.
    play_ns: u64,
    tracks: Vec<TrackAccount>,
    first_packet: bool,
    path: usize,
}

async fn session(core: &Rc<Core>, spec: &ReaderSpec, ctl: &ReaderCtl, report: &mut ReaderReport) -> End {
    let stop = &core.stop_readers;
    let Some(permit) = unless(stop, core.setup_slots.acquire_permit(1)).await else {
        return End::Stopped;
    };
    report.sessions += 1;
    let start = Instant::now();
    let url = &core.plan.read_targets[spec.path];
    let config = core.client_config(client_transport(core.plan.read_transport));
    let setup = async {
        let mut client = Client::connect(url, config).await?;
        client.describe().await?;
        client.setup_all().await?;
        let play_ns = synth::unix_nanos();
        client.play().await?;
        Ok::<_, ClientError>((client, play_ns))
    };
    let (mut client, play_ns) = match unless(stop, setup).await {
        None => return End::Stopped,
        Some(Err(e)) => {
            fail(core, report, "setup", &e);
            return End::Failed;
        }
        Some(Ok(ready)) => ready,
    };
    drop(permit);
    let to_play = micros(start.elapsed());
    core.totals.borrow_mut().time_to_play.saturating_record(to_play);
    report.time_to_play_us.get_or_insert(to_play);
    report.plays += 1;
    core.interval.borrow_mut().plays += 1;
    let tracks = client.description().map_or_else(Vec::new, |d| {
        d.medias
            .iter()
            .map(|m| TrackAccount::new(m.clock_rate().unwrap_or(0)))
            .collect()
    });
    let mut session = Session {
        start,
        play_ns,
        tracks,
        first_packet: false,
        path: spec.path,
    };
    core.readers_up(true);
    ctl.playing.set(true);
    let outcome = unless(stop, read_loop(core, &mut client, &mut session, ctl, report)).await;
    ctl.playing.set(false);
    ctl.leave.set(false);
    core.readers_up(false);

    let mut jitter = Duration::ZERO;
    for track in &session.tracks {
        report.lost += track.lost();
        report.duplicates += track.duplicates;
        report.reordered += track.reordered;
        report.too_late += track.too_late;
        jitter = jitter.max(track.jitter());
    }
    if session.first_packet {
        report.jitter_us = micros(jitter);
        core.totals.borrow_mut().jitter.saturating_record(report.jitter_us);
    }
    match outcome {
        None => {
            teardown(&mut client).await;
            End::Stopped
        }
        Some(Ok(())) => {
            teardown(&mut client).await;
            End::Churned
        }
        Some(Err(e)) => {
            fail(core, report, "reading", &e);
            End::Failed
        }
    }
}

fn fail(core: &Core, report: &mut ReaderReport, stage: &str, e: &ClientError) {
    let message = crate::probe::explain(e);
    tracing::debug!(reader = report.id, "{stage}: {message}");
    core.totals
        .borrow_mut()
        .reader_errors
        .add(error_kind(stage, e), &message);
    core.interval.borrow_mut().errors += 1;
    report.errors += 1;
    report.last_error = Some(format!("{stage}: {message}"));
}

/// Reads until an error, or until churn asks the reader to leave.
async fn read_loop(
    core: &Core,
    client: &mut Client,
    session: &mut Session,
    ctl: &ReaderCtl,
    report: &mut ReaderReport,
) -> Result<(), ClientError> {
    loop {
        let packet = client.read_packet().await?;
        if packet.is_rtcp {
            report.rtcp_packets += 1;
        } else {
            on_rtp(core, session, report, packet.track, packet.data);
        }
        if ctl.leave.get() {
            return Ok(());
        }
    }
}

/// Accounts for one RTP packet: sequence, jitter, latency and fan-out skew.
fn on_rtp(core: &Core, session: &mut Session, report: &mut ReaderReport, track: usize, data: &[u8]) {
    let (Ok(view), Some(account)) = (RtpView::parse(data), session.tracks.get_mut(track)) else {
        report.invalid += 1;
        return;
    };
    let now = Instant::now();
    let arrival = now.saturating_duration_since(core.shared.start);
    let (lost, duplicates, reordered) = (account.lost(), account.duplicates, account.reordered);
    let new = account.observe(view.ssrc(), view.sequence_number(), view.timestamp(), arrival);
    if account.lost() != lost {
        tracing::debug!(
            reader = report.id,
            sequence = view.sequence_number(),
            lost = account.lost() as i64 - lost as i64,
            after_ms = now.saturating_duration_since(session.start).as_millis() as u64,
            "sequence gap"
        );
    }
    let mut interval = core.interval.borrow_mut();
    interval.lost += account.lost() as i64 - lost as i64;
    interval.duplicates += account.duplicates - duplicates;
    interval.reordered += account.reordered - reordered;
    if !new {
        return;
    }
    report.packets += 1;
    report.bytes += data.len() as u64;
    interval.rx_packets += 1;
    interval.rx_bytes += data.len() as u64;
    if !session.first_packet {
        session.first_packet = true;
        let to_first = micros(now.saturating_duration_since(session.start));
        core.totals
            .borrow_mut()
            .time_to_first_packet
            .saturating_record(to_first);
        report.time_to_first_packet_us.get_or_insert(to_first);
    }
    let payload = view.payload();
    // The magic first: the clock is only read for our own packets.
    if payload.len() < TRAILER_LEN || payload[payload.len() - TRAILER_LEN..][..4] != TRAILER_MAGIC {
        return;
    }
    let now_ns = synth::unix_nanos();
    let Some((counter, sent_ns)) = synth::read_trailer(payload, now_ns) else {
        return;
    };
    if now_ns < sent_ns {
        report.negative_latency += 1;
    } else if sent_ns < session.play_ns {
        // Sent before we asked to play: a replay from the server's cache, not a live latency.
        report.sent_before_play += 1;
    } else {
        let latency = (now_ns - sent_ns) / 1000;
        interval.latency.saturating_record(latency);
        report.latency_samples += 1;
        report.latency_sum_us += latency;
        report.latency_max_us = Some(report.latency_max_us.unwrap_or(0).max(latency));
    }
    if view.marker() {
        let at_ns = u64::try_from(arrival.as_nanos()).unwrap_or(u64::MAX);
        let mut skew = core.skew.borrow_mut();
        if let Some(tracker) = skew.get_mut(session.path) {
            tracker.observe(counter, at_ns, &mut core.totals.borrow_mut().skew);
        }
    }
}
