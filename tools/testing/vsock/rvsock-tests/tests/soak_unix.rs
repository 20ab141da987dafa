//! Run the `soak` engine over AF_UNIX (the same cycles as over vsock; no AF_VSOCK here).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rvsock-tests");

#[test]
fn soak_over_unix_sockets() {
    let out = Command::new(BIN)
        .args(["soak", "--family", "unix", "--cycles", "3000", "--concurrency", "20", "--seed", "5", "--timeout", "20"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{text}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let ok = text.lines().filter(|l| l.starts_with("RVSOCK-TEST ok soak.")).count();
    // 2 socket types x 10 modes + soak.complete
    assert_eq!(ok, 21, "{text}");
    assert!(!text.contains("RVSOCK-TEST fail"), "{text}");
}

#[test]
fn soak_only_and_usage_errors() {
    let out = Command::new(BIN)
        .args(["soak", "--family", "unix", "--cycles", "50", "--concurrency", "3", "--only", "seqpacket.reset"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("RVSOCK-TEST ok soak.seqpacket.reset"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("RVSOCK-TEST")).count(), 2, "{text}");
    let bad = Command::new(BIN).args(["soak", "--family", "tcp"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let bad = Command::new(BIN).args(["soak", "--only", "nothing-matches"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
