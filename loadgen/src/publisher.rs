//! A synthetic publisher: ANNOUNCE an H.264 stream, SETUP, RECORD, then send frames on a fixed
//! schedule, each packet stamped with its send time, until told to stop. Between frames it reads what
//! the server sends (RTCP receiver reports, keepalive responses) so that no socket of ours fills up.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use shardcast::client::{Client, ClientError};

use crate::core::{sleep_until, teardown, unless, Core};
use crate::plan::{client_transport, PublisherSpec};
use crate::stats::{error_kind, micros, PublisherReport};
use shardcast_loadgen::synth::{self, Packetizer};

/// Pause before a failed session is retried.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Read what the server sent at least this often.
const DRAIN_PERIOD: Duration = Duration::from_millis(500);
/// Falling further behind than this resets the schedule (frames are skipped, not sent in a burst).
const MAX_BEHIND: Duration = Duration::from_secs(1);

/// Runs one publisher until the publishers are told to stop.
pub async fn run(core: Rc<Core>, spec: PublisherSpec) -> PublisherReport {
    let mut report = PublisherReport {
        id: spec.id,
        core: Some(core.index),
        url: core.plan.publish_urls[spec.id].clone(),
        ..PublisherReport::default()
    };
    let stop = &core.stop_publishers;
    if unless(stop, sleep_until(core.shared.start + spec.delay))
        .await
        .is_none()
    {
        return report;
    }
    let seed = synth::unix_nanos() ^ (spec.id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut packetizer = Packetizer::new(core.plan.shape, seed);
    let description = synth::session_description(&core.plan.shape, seed >> 1);
    let url = &core.plan.publish_targets[spec.id];
    while !stop.is_set() {
        report.sessions += 1;
        let start = Instant::now();
        let config = core.client_config(client_transport(core.plan.publish_transport));
        let setup = async {
            let mut client = Client::connect(url, config).await?;
            client.announce(&description).await?;
            client.setup_all().await?;
            client.record().await?;
            Ok::<_, ClientError>(client)
        };
        let mut client = match unless(stop, setup).await {
            None => break,
            Some(Ok(client)) => client,
            Some(Err(e)) => {
                fail(&core, &mut report, "setup", &e);
                if unless(stop, glommio::timer::sleep(RETRY_DELAY)).await.is_none() {
                    break;
                }
                continue;
            }
        };
        let to_record = micros(start.elapsed());
        core.totals.borrow_mut().time_to_record.saturating_record(to_record);
        report.time_to_record_us.get_or_insert(to_record);
        report.records += 1;
        core.shared.paths_up[spec.id].store(true, Ordering::Release);
        core.publishers_up(true);
        let outcome = unless(stop, stream(&core, &mut client, &mut packetizer, &mut report)).await;
        core.publishers_up(false);
        core.shared.paths_up[spec.id].store(false, Ordering::Release);
        match outcome {
            None => {
                teardown(&mut client).await;
                break;
            }
            Some(Err(e)) => {
                fail(&core, &mut report, "publishing", &e);
                if unless(stop, glommio::timer::sleep(RETRY_DELAY)).await.is_none() {
                    break;
                }
            }
            Some(Ok(never)) => match never {},
        }
    }
    report
}

fn fail(core: &Core, report: &mut PublisherReport, stage: &str, e: &ClientError) {
    let message = crate::probe::explain(e);
    tracing::debug!(publisher = report.id, "{stage}: {message}");
    core.totals
        .borrow_mut()
        .publisher_errors
        .add(error_kind(stage, e), &message);
    core.interval.borrow_mut().errors += 1;
    report.errors += 1;
    report.last_error = Some(format!("{stage}: {message}"));
    let mut failures = core
        .shared
        .publisher_failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    failures[report.id] = report.last_error.clone();
}

/// Reads (and drops) whatever the server sends, until an error.
async fn drain(client: &mut Client) -> Result<(), ClientError> {
    loop {
        client.read_packet().await?;
    }
}

/// Sends frames on schedule until an error (or until the caller stops waiting).
async fn stream(
    core: &Core,
    client: &mut Client,
    packetizer: &mut Packetizer,
    report: &mut PublisherReport,
) -> Result<Infallible, ClientError> {
    let shape = core.plan.shape;
    let mut buf = vec![0u8; shape.packet_size];
    let mut epoch = Instant::now();
    let mut sent_since_epoch: u32 = 0;
    let mut last_drain = epoch;
    loop {
        let due = epoch + Duration::from_secs_f64(f64::from(sent_since_epoch) / shape.fps);
        let now = Instant::now();
        if now < due {
            if now.duration_since(last_drain) >= DRAIN_PERIOD {
                last_drain = now;
                futures_lite::future::or(drain(client), async {
                    sleep_until(due).await;
                    Ok(())
                })
                .await?;
            } else {
                sleep_until(due).await;
            }
        }
        let behind = Instant::now().saturating_duration_since(due);
        if behind > shape.frame_interval() {
            report.late_frames += 1;
        }
        report.max_lateness_us = report.max_lateness_us.max(micros(behind));
        if behind > MAX_BEHIND {
            report.resyncs += 1;
            epoch = Instant::now();
            sent_since_epoch = 0;
        }
        let frame = packetizer.next_frame();
        let mut bytes = 0u64;
        for i in 0..frame.packets() {
            let (len, trailer) = packetizer.write_packet(&frame, i, &mut buf);
            if trailer {
                let counter = packetizer.next_counter();
                synth::stamp(&mut buf[..len], counter);
            }
            client.write_packet(0, false, &buf[..len]).await?;
            bytes += len as u64;
        }
        let packets = frame.packets() as u64;
        report.frames += 1;
        report.packets += packets;
        report.bytes += bytes;
        let mut interval = core.interval.borrow_mut();
        interval.tx_packets += packets;
        interval.tx_bytes += bytes;
        drop(interval);
        sent_since_epoch += 1;
    }
}
