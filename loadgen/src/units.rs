//! The quantities loadgen takes on its command line, parsed and written back: durations (`10s`) and
//! bit rates (`2M`). The benchmark harness (bench/) parses its own options with the same functions and
//! writes rates for loadgen with [`format_rate`], so that both programs read a value alike.

use std::time::Duration;

/// Parses `250ms`, `10s`, `2m`, `1h`, `1.5s` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (value, unit) = number_and_unit(s, s, "a duration (examples: 500ms, 10s, 2m, 1h)")?;
    let seconds = match unit {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "us" => value / 1e6,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit `{other}` (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a bit rate: `2M`, `500k`, `1.5M`, `2000000`, optionally followed by `bps` or `b`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("bps")
        .or_else(|| t.strip_suffix("bit/s"))
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(t);
    let (value, unit) = number_and_unit(t, s, "a rate (examples: 500k, 2M, 1.5M)")?;
    let factor = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "m" | "M" => 1e6,
        "g" | "G" => 1e9,
        other => return Err(format!("unknown rate unit `{other}` (use k, M or G)")),
    };
    let rate = value * factor;
    if !rate.is_finite() || !(1000.0..=100e9).contains(&rate) {
        return Err(format!("`{s}`: the rate must be between 1k and 100G bits/s"));
    }
    Ok(rate.round() as u64)
}

/// Splits `text` into its leading decimal number and the unit after it (trimmed). The error names
/// `shown` (what the user typed) as not being `what`.
fn number_and_unit<'a>(text: &'a str, shown: &str, what: &str) -> Result<(f64, &'a str), String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value = number.parse().map_err(|_| format!("`{shown}` is not {what}"))?;
    Ok((value, unit.trim()))
}

/// A rate as [`parse_rate`] takes it: `2M`, `500k`, `1500`.
pub fn format_rate(bits: u64) -> String {
    if bits % 1_000_000 == 0 {
        format!("{}M", bits / 1_000_000)
    } else if bits % 1000 == 0 {
        format!("{}k", bits / 1000)
    } else {
        bits.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2M"), Ok(2_000_000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(parse_rate("1.5Mbps"), Ok(1_500_000));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10").is_err(), "below 1k");
    }

    #[test]
    fn formatted_rates_parse_back_to_themselves() {
        assert_eq!(format_rate(2_000_000), "2M");
        assert_eq!(format_rate(8_000), "8k");
        assert_eq!(format_rate(1_500), "1500");
        for bits in [1_500, 8_000, 2_000_000, 2_500_000, 10_000_000_000] {
            assert_eq!(parse_rate(&format_rate(bits)), Ok(bits));
        }
    }
}
