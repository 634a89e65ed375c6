//! Behaviour on a terminal, through a real pseudo-terminal (`script` from util-linux;
//! skipped with the reason when it is missing): a progress bar for large trees, pretty
//! output by default. On a pipe, neither.

use std::process::Command;

use crate::common::{BIN, Sandbox};

/// Run `statefile args` in `dir` on a pseudo-terminal; returns what the terminal showed.
fn on_a_terminal(dir: &std::path::Path, args: &str) -> Option<String> {
    let out = Command::new("script")
        .args(["-qec", &format!("'{BIN}' {args}"), "/dev/null"])
        .current_dir(dir)
        .env_remove("STATEFILE_DURABILITY")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"))
}

#[test]
fn a_terminal_gets_a_progress_bar_and_pretty_output_a_pipe_does_not() {
    if Command::new("script").arg("--version").output().is_err() {
        crate::skip::skip("script (util-linux) is not installed; it provides the pty");
        return;
    }
    let s = Sandbox::new();
    for i in 0..300 {
        s.write(&format!("d{i}.json"), format!("{{\"i\": {i}}}").as_bytes());
    }
    let tty = on_a_terminal(s.dir.path(), "verify .").unwrap();
    assert!(
        tty.contains("checking") && tty.contains("/300 documents"),
        "a progress bar on the terminal: {:?}",
        &tty[..tty.len().min(300)]
    );
    assert!(tty.contains("300 documents"), "{tty}");
    let piped = s.run(&["verify", "."]).ok();
    assert!(!piped.stderr.contains("checking"), "{}", piped.stderr);
    assert!(!piped.stdout.contains("checking"), "{}", piped.stdout);

    let tty = on_a_terminal(s.dir.path(), "get d1.json").unwrap();
    assert_eq!(tty, "{\n  \"i\": 1\n}\n", "pretty on a terminal");
    let tty = on_a_terminal(s.dir.path(), "get --compact d1.json").unwrap();
    assert_eq!(tty, "{\"i\":1}\n", "--compact wins on a terminal");
    assert_eq!(
        s.run(&["get", "d1.json"]).ok().stdout,
        "{\"i\":1}\n",
        "compact on a pipe"
    );
}
