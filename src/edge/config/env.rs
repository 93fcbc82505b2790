//! `SHARDCAST_<SECTION>_<KEY>` environment overrides, applied to the parsed TOML tree before it
//! is deserialized, so they are validated exactly like the file.
//!
//! Tables: `SHARDCAST_SERVER_READ_TIMEOUT=5s`. Arrays of tables, by index:
//! `SHARDCAST_PATHS_0_MAX_READERS=3`; the index one past the end adds an entry. Keys contain
//! underscores, so names are resolved against the schema's key names. A value that parses as
//! a TOML value (`3`, `true`, `["basic"]`, `[{ action = "read" }]`) is used as such, anything
//! else (and every key that holds text) as a string.

use toml::{Table, Value};

/// Prefix of every override.
pub const PREFIX: &str = "SHARDCAST_";

/// Variables with this prefix belong to the test suite, not to the configuration.
const TEST_PREFIX: &str = "SHARDCAST_TEST_";

/// Whether a key holds text (never read as another TOML type) or any TOML value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Any,
}

use Kind::{Any, Text};

/// A table's keys and what each holds.
type Keys = &'static [(&'static str, Kind)];

const SERVER_KEYS: Keys = &[
    ("rtsp_address", Text),
    ("rtp_address", Text),
    ("rtcp_address", Text),
    ("multicast_ip_range", Text),
    ("multicast_rtp_port", Any),
    ("multicast_rtcp_port", Any),
    ("read_timeout", Text),
    ("write_timeout", Text),
    ("idle_timeout", Text),
    ("udp_read_buffer_size", Any),
    ("write_queue_size", Any),
    ("max_packet_size", Any),
    ("disable_rtcp_sender_reports", Any),
    ("cpus", Any),
    ("auth_methods", Any),
    ("rtsps_address", Text),
    ("tls_cert_file", Text),
    ("tls_key_file", Text),
];
const METRICS_KEYS: Keys = &[("address", Text)];
const LOG_KEYS: Keys = &[("level", Text), ("format", Text)];
const PATH_KEYS: Keys = &[
    ("name", Text),
    ("pattern", Text),
    ("source", Text),
    ("source_transport", Text),
    ("on_demand", Any),
    ("start_timeout", Text),
    ("close_after_idle", Text),
    ("max_readers", Any),
    ("publish_users", Any),
    ("read_users", Any),
];
const USER_KEYS: Keys = &[("name", Text), ("password", Text), ("ips", Any), ("permissions", Any)];

/// The schema: each section, whether it is an array of tables, and its keys.
const SECTIONS: &[(&str, bool, Keys)] = &[
    ("server", false, SERVER_KEYS),
    ("metrics", false, METRICS_KEYS),
    ("log", false, LOG_KEYS),
    ("paths", true, PATH_KEYS),
    ("users", true, USER_KEYS),
];

/// Why an override was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The variable names no section and key of the configuration.
    #[error("{variable} names no configuration key (expected SHARDCAST_<SECTION>_<KEY>, or SHARDCAST_PATHS_<N>_<KEY> / SHARDCAST_USERS_<N>_<KEY>)")]
    UnknownKey {
        /// The variable.
        variable: String,
    },
    /// An array index more than one past the end.
    #[error("{variable}: [[{section}]] has {len} entries, so the index can be at most {len}")]
    IndexOutOfRange {
        /// The variable.
        variable: String,
        /// The array.
        section: &'static str,
        /// Its length before the override.
        len: usize,
    },
    /// The file gives the section a type other than a table or array of tables.
    #[error("{variable}: `{section}` in the file is not a table")]
    NotATable {
        /// The variable.
        variable: String,
        /// The section.
        section: &'static str,
    },
}

/// Applies every `SHARDCAST_` variable of `vars` to `root`; returns how many applied.
pub fn apply(root: &mut Table, vars: impl IntoIterator<Item = (String, String)>) -> Result<usize, EnvError> {
    let mut ours: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX) && !k.starts_with(TEST_PREFIX))
        .collect();
    // Sorted, so that PATHS_0 is applied (and may add an entry) before PATHS_1.
    ours.sort();
    for (variable, raw) in &ours {
        apply_one(root, variable, raw)?;
    }
    Ok(ours.len())
}

fn apply_one(root: &mut Table, variable: &str, raw: &str) -> Result<(), EnvError> {
    let unknown = || EnvError::UnknownKey {
        variable: variable.to_owned(),
    };
    let rest = variable[PREFIX.len()..].to_ascii_lowercase();
    let (section, is_array, keys, after) = SECTIONS
        .iter()
        .find_map(|(name, is_array, keys)| {
            let after = rest.strip_prefix(name)?.strip_prefix('_')?;
            Some((*name, *is_array, *keys, after))
        })
        .ok_or_else(unknown)?;
    let not_table = || EnvError::NotATable {
        variable: variable.to_owned(),
        section,
    };
    let (table, key) = if is_array {
        let (index, key) = after.split_once('_').ok_or_else(unknown)?;
        let index: usize = index.parse().map_err(|_| unknown())?;
        let array = root
            .entry(section)
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .ok_or_else(not_table)?;
        if index > array.len() {
            return Err(EnvError::IndexOutOfRange {
                variable: variable.to_owned(),
                section,
                len: array.len(),
            });
        }
        if index == array.len() {
            array.push(Value::Table(Table::new()));
        }
        let table = array[index].as_table_mut().ok_or_else(not_table)?;
        (table, key)
    } else {
        let table = root
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(not_table)?;
        (table, after)
    };
    let kind = keys
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, kind)| *kind)
        .ok_or_else(unknown)?;
    table.insert(key.to_owned(), parse_value(raw, kind));
    Ok(())
}

/// A TOML value if `raw` is one and the key takes any value, else the text.
fn parse_value(raw: &str, kind: Kind) -> Value {
    if kind == Any {
        if let Ok(mut doc) = format!("v = {raw}").parse::<Table>() {
            if let Some(value) = doc.remove("v") {
                return value;
            }
        }
    }
    Value::String(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn overrides_reach_tables_and_array_entries_with_typed_values() {
        let mut root: Table = "[server]\nrtsp_address = '0.0.0.0:1'\n[[paths]]\nname = 'a'\n"
            .parse()
            .unwrap();
        let applied = apply(
            &mut root,
            vars(&[
                ("SHARDCAST_SERVER_READ_TIMEOUT", "5s"),
                ("SHARDCAST_SERVER_WRITE_QUEUE_SIZE", "512"),
                ("SHARDCAST_LOG_FORMAT", "json"),
                ("SHARDCAST_PATHS_0_MAX_READERS", "3"),
                ("SHARDCAST_PATHS_1_NAME", "b"),
                ("SHARDCAST_USERS_0_NAME", "any"),
                ("SHARDCAST_USERS_0_PERMISSIONS", "[{ action = 'read' }]"),
                ("SHARDCAST_TEST_IN_NETNS", "1"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(applied, 7);
        assert_eq!(root["server"]["read_timeout"].as_str(), Some("5s"));
        assert_eq!(root["server"]["write_queue_size"].as_integer(), Some(512));
        assert_eq!(root["log"]["format"].as_str(), Some("json"));
        assert_eq!(root["paths"][0]["max_readers"].as_integer(), Some(3));
        assert_eq!(root["paths"][1]["name"].as_str(), Some("b"));
        assert_eq!(root["users"][0]["permissions"][0]["action"].as_str(), Some("read"));
    }

    #[test]
    fn text_keys_stay_text_even_when_they_look_like_numbers() {
        let mut root = Table::new();
        apply(&mut root, vars(&[("SHARDCAST_USERS_0_PASSWORD", "1234")])).unwrap();
        assert_eq!(root["users"][0]["password"].as_str(), Some("1234"));
    }

    #[test]
    fn unknown_variables_and_indexes_past_the_end_are_named() {
        let mut root = Table::new();
        let e = apply(&mut root, vars(&[("SHARDCAST_SERVER_RTSP_ADRESS", "x")])).unwrap_err();
        assert!(e.to_string().contains("SHARDCAST_SERVER_RTSP_ADRESS"), "{e}");
        let e = apply(&mut root, vars(&[("SHARDCAST_CAMERAS_0_NAME", "x")])).unwrap_err();
        assert!(matches!(e, EnvError::UnknownKey { .. }), "{e}");
        let e = apply(&mut root, vars(&[("SHARDCAST_PATHS_2_NAME", "x")])).unwrap_err();
        assert!(matches!(e, EnvError::IndexOutOfRange { len: 0, .. }), "{e}");
    }
}
