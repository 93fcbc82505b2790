//! Multicast tests run inside their own network namespace, whose loopback carries 224.0.0.0/4
//! (DESIGN.md §4: multicast never reaches a real interface and needs no host setup).

use std::process::Command;

const INSIDE: &str = "SHARDCAST_TEST_IN_NETNS";

/// Runs `test` of this test binary again inside a new network namespace and asserts it passed
/// there; returns false when already inside, where the caller runs the test body.
pub fn rerun_in_network_namespace(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return false;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut unshare = Command::new("unshare");
    if !root {
        // Without root, a user namespace maps us to root inside it (Debian allows this by default).
        unshare.arg("--map-root-user");
    }
    let setup =
        "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && exec \"$0\" \"$@\"";
    let output = unshare
        .args(["--net", "--", "sh", "-c", setup])
        .arg(std::env::current_exe().expect("the test binary's path"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("unshare (util-linux) must be installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} failed inside its network namespace (it needs unshare and ip from iproute2):\n{stdout}\n{stderr}"
    );
    true
}
