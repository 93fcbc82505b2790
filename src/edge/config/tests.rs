//! Configuration parsing and validation, without a server.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::edge::paths::{PathMatcher, PathSource};
use crate::proto::auth::AuthMethod;
use crate::server::StoredPassword;

const SERVER: &str = "[server]\nrtsp_address = '0.0.0.0:1'\n";

fn with_server(rest: &str) -> Result<Config, ConfigError> {
    Config::from_toml(&format!("{SERVER}{rest}"))
}

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

#[test]
fn embedded_default_is_valid_listens_on_8554_and_lets_anyone_publish_and_read() {
    let c = Config::from_toml(EMBEDDED_DEFAULT).unwrap();
    assert_eq!(c.server.rtsp_address.port(), 8554);
    assert_eq!(c.server.rtp_address.map(|a| a.port()), Some(8000));
    assert_eq!(c.server.multicast_ip_range.map(|r| r.prefix_len()), Some(16));
    assert_eq!(
        c.metrics.as_ref().map(|m| m.address.to_string()),
        Some("127.0.0.1:9998".to_owned())
    );
    let far: IpAddr = "203.0.113.9".parse().unwrap();
    assert!(c.permits(None, far, Action::Publish, "any/path/at/all"));
    assert!(c.permits(None, far, Action::Read, "cam"));
    assert_eq!(c.log.format, LogFormat::Text);
}

#[test]
fn odd_rtp_port_is_refused() {
    let e = Config::from_toml(
        "[server]\nrtsp_address='0.0.0.0:1'\nrtp_address='0.0.0.0:8001'\nrtcp_address='0.0.0.0:8002'",
    )
    .unwrap_err();
    assert!(
        matches!(e, ConfigError::Server(ServerConfigError::OddRtpPort { port: 8001, .. })),
        "{e}"
    );
}

#[test]
fn every_library_setting_can_be_set_from_the_file() {
    let c = with_server(
        "read_timeout='5s'\nwrite_timeout='2s'\nidle_timeout='1m'\n\
         udp_read_buffer_size=1048576\nwrite_queue_size=512\nmax_packet_size=1200\n\
         disable_rtcp_sender_reports=true\ncpus=[0]\nauth_methods=['digest_sha256']",
    )
    .unwrap()
    .server
    .to_server_config();
    assert_eq!(c.read_timeout, Duration::from_secs(5));
    assert_eq!(c.write_timeout, Duration::from_secs(2));
    assert_eq!(c.idle_timeout, Duration::from_secs(60));
    assert_eq!(
        (c.udp_read_buffer_size, c.write_queue_size, c.max_packet_size),
        (Some(1 << 20), 512, 1200)
    );
    assert!(c.disable_rtcp_sender_reports);
    assert_eq!(c.cpus, Some(vec![0]));
    assert_eq!(c.auth_methods, vec![AuthMethod::DigestSha256]);
}

#[test]
fn bad_values_name_their_key() {
    for (text, key) in [
        ("idle_timeout='soon'", "idle_timeout"),
        ("auth_methods=['ntlm']", "auth_methods"),
        ("write_queue_size=100", "write_queue_size"),
        ("multicast_rtp_port=8002", "multicast_ip_range"),
        ("multicast_ip_range='10.0.0.0/8'", "10.0.0.0/8"),
    ] {
        let e = with_server(text).unwrap_err();
        assert!(e.to_string().contains(key), "{text}: {e}");
    }
}

#[test]
fn unknown_key_error_names_key_and_line() {
    let e = with_server("rtsp_adress='x'\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("rtsp_adress") && msg.contains("line 3"), "{msg}");
}

#[test]
fn tls_files_come_together_and_rtsps_needs_them() {
    let e = with_server("tls_cert_file='/c.pem'").unwrap_err();
    assert!(matches!(e, ConfigError::Tls(TlsSettingsError::CertWithoutKey)), "{e}");
    let e = with_server("rtsps_address='0.0.0.0:8322'").unwrap_err();
    assert!(e.to_string().contains("rtsps_address"), "{e}");
    let c = with_server("rtsps_address='0.0.0.0:8322'\ntls_cert_file='/c.pem'\ntls_key_file='/k.pem'").unwrap();
    assert_eq!(c.server.rtsps_address.map(|a| a.port()), Some(8322));
}

#[test]
fn log_section_takes_a_filter_and_a_format() {
    let c = with_server("[log]\nlevel = 'shardcast=debug,warn'\nformat = 'json'\n").unwrap();
    assert_eq!(
        (c.log.level.as_str(), c.log.format),
        ("shardcast=debug,warn", LogFormat::Json)
    );
    let e = with_server("[log]\nformat = 'xml'\n").unwrap_err();
    assert!(e.to_string().contains("xml") && e.to_string().contains("line 4"), "{e}");
    let e = with_server("[log]\nlevel = 'shardcast=loud'\n").unwrap_err();
    assert!(matches!(e, ConfigError::LogLevel { .. }), "{e}");
}

#[test]
fn always_on_pulls_need_an_exact_name_and_an_origin() {
    let always_on = with_server("[[paths]]\nname = 'cam'\nsource = 'rtsp://origin/cam'\non_demand = false\n").unwrap();
    assert!(!always_on.paths[0].on_demand);
    let e =
        with_server("[[paths]]\npattern = '^c/(.+)$'\nsource = 'rtsp://origin/$1'\non_demand = false\n").unwrap_err();
    assert!(
        e.to_string().contains("on_demand") && e.to_string().contains("exact"),
        "{e}"
    );
    let e = with_server("[[paths]]\nname = 'cam'\non_demand = false\n").unwrap_err();
    assert!(e.to_string().contains("on_demand"), "{e}");
}

#[test]
fn paths_take_exact_names_or_patterns_with_their_defaults() {
    let c = with_server(
        "[[paths]]\nname = '/cam1/'\n\n[[paths]]\npattern = '^cams/(\\w+)$'\nsource = 'rtsp://origin/$1'\n\
         source_transport = 'udp'\nstart_timeout = '3s'\nclose_after_idle = '1m'\nmax_readers = 2\n",
    )
    .unwrap();
    assert_eq!(c.paths[0].matcher, PathMatcher::Exact("cam1".into()));
    assert_eq!(c.paths[0].source, PathSource::Publisher);
    assert!(c.paths[0].on_demand);
    assert_eq!(c.paths[0].start_timeout, Duration::from_secs(10));
    let m = crate::edge::paths::find(&c.paths, "cams/door").unwrap();
    assert_eq!(m.source_url().as_deref(), Some("rtsp://origin/door"));
    assert!(m.entry.on_demand);
    assert_eq!(
        (m.entry.max_readers, m.entry.close_after_idle),
        (2, Duration::from_secs(60))
    );
}

#[test]
fn path_errors_name_the_entry_key_and_line() {
    let cases = [
        ("[[paths]]\nname = 'a'\npattern = 'b'\n", "`name`", "line 3"),
        ("[[paths]]\nsource = 'publisher'\n", "`name`", "line 3"),
        ("[[paths]]\npattern = '^(unclosed$'\n", "`pattern`", "line 3"),
        ("[[paths]]\nname = 'x'\nsource = 'http://o/x'\n", "`source`", "line 3"),
        ("[[paths]]\npattern = '^(a)$'\nsource = 'rtsp://o/$2'\n", "$2", "line 3"),
        ("[[paths]]\nname = 'x'\nread_users = ['bob']\n", "`read_users`", "bob"),
        ("[[paths]]\nname = 'x'\nmax_reader = 1\n", "max_reader", "line 5"),
    ];
    for (text, key, more) in cases {
        let msg = with_server(text).unwrap_err().to_string();
        assert!(msg.contains(key) && msg.contains(more), "{text}: {msg}");
    }
}

#[test]
fn users_take_plain_or_hashed_passwords_ranges_and_permissions() {
    let c = with_server(
        "auth_methods = ['basic']\n\
         [[users]]\nname = 'any'\npermissions = [{ action = 'read', path = '^public/' }]\n\
         [[users]]\nname = 'cam'\npassword = 'sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols='\n\
         ips = ['127.0.0.1', '10.0.0.0/8', '::1']\npermissions = [{ action = 'publish' }, { action = 'metrics' }]\n",
    )
    .unwrap();
    assert!(c.users[1].password.as_ref().is_some_and(StoredPassword::is_hashed));
    assert!(c.permits(None, local(), Action::Read, "public/x"));
    assert!(!c.permits(None, local(), Action::Read, "private/x"));
    assert!(!c.permits(None, local(), Action::Publish, "public/x"));
    assert!(c.permits(Some("cam"), local(), Action::Publish, "anything"));
    assert!(c.permits(Some("cam"), local(), Action::Metrics, ""));
    assert!(!c.permits(Some("cam"), "192.0.2.1".parse().unwrap(), Action::Publish, "anything"));
    assert!(!c.permits(Some("nobody"), local(), Action::Read, "public/x"));
}

#[test]
fn path_user_lists_restrict_users_on_top_of_their_permissions() {
    let c = with_server(
        "[[paths]]\nname = 'vip'\nread_users = ['alice']\n[[paths]]\npattern = '.*'\n\
         [[users]]\nname = 'alice'\npassword = 'a'\npermissions = [{ action = 'read' }]\n\
         [[users]]\nname = 'bob'\npassword = 'b'\npermissions = [{ action = 'read' }]\n",
    )
    .unwrap();
    assert!(c.permits(Some("alice"), local(), Action::Read, "vip"));
    assert!(!c.permits(Some("bob"), local(), Action::Read, "vip"));
    assert!(c.permits(Some("bob"), local(), Action::Read, "other"));
}

#[test]
fn user_errors_name_the_entry_key_and_line() {
    let cases = [
        ("[[users]]\nname = 'u'\npassword = 'p'\npermissions = [{ action = 'delete' }]\n", "delete", "line 6"),
        ("[[users]]\nname = 'u'\npassword = 'p'\npermissions = [{ action = 'read', path = '(' }]\n", "`permissions`", "line 3"),
        ("[[users]]\nname = 'u'\npassword = 'p'\nips = ['10.0.0.0/40']\npermissions = [{ action = 'read' }]\n", "`ips`", "10.0.0.0/40"),
        ("auth_methods = ['digest_md5']\n[[users]]\nname = 'u'\npassword = 'sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols='\n", "Digest needs the plain password", "line 4"),
        ("[[users]]\nname = 'u'\npassword = 'p'\n[[users]]\nname = 'u'\npassword = 'q'\n", "entry 1", "line 6"),
        ("[[users]]\nname = 'any'\npassword = 'p'\n", "`password`", "line 3"),
        ("[[users]]\nname = 'u'\npermissions = [{ action = 'read' }]\n", "`password`", "line 3"),
    ];
    for (text, key, more) in cases {
        let msg = with_server(text).unwrap_err().to_string();
        assert!(msg.contains(key) && msg.contains(more), "{text}: {msg}");
    }
}

#[test]
fn environment_overrides_apply_before_validation() {
    let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let text = format!("{SERVER}[[paths]]\nname = 'a'\n");
    let c = Config::load(
        &text,
        vars(&[
            ("SHARDCAST_SERVER_READ_TIMEOUT", "5s"),
            ("SHARDCAST_PATHS_0_MAX_READERS", "3"),
            ("SHARDCAST_METRICS_ADDRESS", "127.0.0.1:9000"),
        ]),
    )
    .unwrap();
    assert_eq!(c.server.read_timeout, Some(Duration::from_secs(5)));
    assert_eq!(c.paths[0].max_readers, 3);
    assert_eq!(c.metrics.map(|m| m.address.port()), Some(9000));
    let e = Config::load(&text, vars(&[("SHARDCAST_SERVER_READ_TIMEOUT", "soon")])).unwrap_err();
    assert!(
        e.to_string().contains("read_timeout") && e.to_string().contains("environment"),
        "{e}"
    );
    let e = Config::load(&text, vars(&[("SHARDCAST_SERVER_NOPE", "1")])).unwrap_err();
    assert!(e.to_string().contains("SHARDCAST_SERVER_NOPE"), "{e}");
}

#[test]
fn a_file_without_paths_serves_every_path_from_publishers() {
    let c = with_server("").unwrap();
    let matched = crate::edge::paths::find(&c.paths, "any/path/at/all").unwrap();
    assert_eq!(matched.entry.source, PathSource::Publisher);
    assert!(c.permits(None, local(), Action::Publish, "any/path/at/all"));
    let with_one = with_server("[[paths]]\nname = 'only'\n").unwrap();
    assert!(crate::edge::paths::find(&with_one.paths, "other").is_none());
}
