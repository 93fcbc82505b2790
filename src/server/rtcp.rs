//! RTCP the server generates: sender reports to readers.

use crate::proto::rtcp::SenderReport;
use crate::proto::time::NtpTime;

/// An RTCP sender report for a track, or `None` if it cannot be built (never, for valid input).
pub(crate) fn sender_report(
    ssrc: u32,
    ntp: NtpTime,
    rtp_time: u32,
    packet_count: u32,
    octet_count: u32,
) -> Option<Vec<u8>> {
    let report = SenderReport {
        ssrc,
        ntp,
        rtp_time,
        packet_count,
        octet_count,
        reports: Vec::new(),
    };
    let mut buf = vec![0u8; 64];
    let len = report.write(&mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}
