//! The edge configuration (TOML, regex paths, `$N` source templates, CIDR ranges, `sha256:`
//! passwords, environment overrides) on arbitrary text: a config is accepted or refused with an
//! error, never a panic; what is accepted matches paths without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::edge::config::Config;
use shardcast::edge::paths::find;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The first line, when it looks like NAME=VALUE, is an environment override.
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let vars: Vec<(String, String)> = match first.split_once('=') {
        Some((name, value)) if name.starts_with("SHARDCAST_") => vec![(name.to_owned(), value.to_owned())],
        _ => Vec::new(),
    };
    let toml = if vars.is_empty() { text } else { rest };
    if let Ok(config) = Config::load(toml, vars) {
        for path in ["live", "cams/door", "a/b/c", ""] {
            if let Some(matched) = find(&config.paths, path) {
                let _ = matched.source_url();
            }
        }
    }
});
