//! The README's examples, as written there: an edit that breaks one fails here.
//!
//! - every ```` ```sh ```` block runs, in order, in one scratch directory, with the built
//!   `statefile` first on PATH (as after the README's install step);
//! - every ```` ```sh no_run ```` block (builds, the test command, a server that runs until
//!   stopped) is syntax-checked, and the commands it names are checked to exist and work;
//! - the ```` ```console ```` curl session is replayed against a real server started with
//!   the README's own command, and each answer must show the lines the README shows;
//! - the library snippet is built and run as a fresh project with the README's
//!   `[dependencies]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::common::{self, BIN, Sandbox};

const README: &str = include_str!("../../../../README.md");

/// The workspace root (where README.md, ./test and Cargo.lock live).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fenced code block: its info string (`sh`, `sh no_run`, `console`, ...), its text,
/// and the README line it starts on.
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in README.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    text: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some("")) => out.push(open.take().unwrap()),
            (Some(b), _) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md has an unclosed code block");
    out
}

fn with_info(info: &str) -> Vec<Block> {
    blocks().into_iter().filter(|b| b.info == info).collect()
}

/// `PATH` with the built binary's directory first.
fn path_with_statefile() -> std::ffi::OsString {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let mut dirs = vec![bin_dir.to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// Run `script` with `sh -e` in `dir`; returns (exit code, stdout, stderr).
fn sh(dir: &Path, script: &str) -> common::Run {
    let out = Command::new("sh")
        .args(["-e", "-c", script])
        .current_dir(dir)
        .env("PATH", path_with_statefile())
        .env_remove("STATEFILE_DURABILITY")
        .env_remove("STATEFILE_BACKUPS")
        .env_remove("STATEFILE_LOCK_TIMEOUT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    common::Run::from(out)
}

/// Whether `tool` is installed. When it is not: under CI=true the test fails, elsewhere
/// it says it skips.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is not installed (CI=true: .ci/run installs it)"
        );
        println!("skipping: {tool} is not installed; the README's examples use it");
    }
    found
}

#[test]
fn the_shell_examples_run_as_written() {
    if !have("jq") {
        return;
    }
    let s = Sandbox::new();
    // The job runner's `./run-job ID` is the user's program: here job b2 fails.
    s.write("run-job", b"#!/bin/sh\n[ \"$1\" != b2 ]\n");
    std::fs::set_permissions(
        s.path("run-job"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let examples = with_info("sh");
    assert!(examples.len() >= 4, "README.md lost its shell examples");
    let mut output = String::new();
    for b in &examples {
        let r = sh(s.dir.path(), &b.text);
        assert_eq!(
            r.code, 0,
            "README.md line {}: the example failed\n{}\nstdout: {}\nstderr: {}",
            b.line, b.text, r.stdout, r.stderr
        );
        output.push_str(&r.stdout);
        output.push_str(&r.stderr);
    }

    // The job runner processed each pending job, one by one (regression: `get --raw`
    // piped through `tr -d '[]",'` made one job named a1b2c3).
    assert!(!s.path("jobs/a1b2c3.json").exists());
    for (id, status, error) in [
        ("a1", "done", json!(null)),
        ("b2", "failed", json!("exit 1")),
        ("c3", "done", json!(null)),
    ] {
        let job = s.json(&format!("jobs/{id}.json"));
        assert_eq!(job["status"], status, "{id}: {job}");
        assert_eq!(job["error"], error, "{id}: {job}");
        assert!(job["started"].is_string(), "{id}: {job}");
        assert!(s.path(&format!("logs/{id}.log")).exists(), "{id}");
    }
    assert_eq!(
        s.json("results.json"),
        json!({"finished": ["a1", "b2", "c3"]})
    );
    // Compare-and-swap took replicas from 2 to 3; the damaged file then read as its
    // backup (2) with exit 5 and advice first, and recover put that backup back.
    assert!(output.contains("exit 5\n"), "{output}");
    assert!(
        output.contains(
            "help: backup 1 is good: print it with `statefile get --fallback config.json`"
        ),
        "{output}"
    );
    assert!(output.contains("{\"replicas\":2}\n"), "{output}");
    assert_eq!(s.json("config.json"), json!({"replicas": 2}));
}

/// The commands in a `sh no_run` block, without comments and blank lines.
fn commands(b: &Block) -> Vec<String> {
    b.text
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The README's `statefile serve ...` (or `cargo run ... -- serve ...`) line as the
/// arguments of the built binary.
fn serve_args(line: &str) -> Vec<&str> {
    let args = match line.split_once(" -- ") {
        Some((cargo, args)) => {
            assert!(
                cargo.starts_with("cargo run") && cargo.contains("-p statefile-cli"),
                "{line}"
            );
            args
        }
        None => line.strip_prefix("statefile ").unwrap(),
    };
    let args: Vec<&str> = args.split_whitespace().collect();
    assert!(
        args.iter().all(|a| !a.contains(['\'', '"', '$'])),
        "quoting in {line}: split it by hand here"
    );
    args
}

/// A server started by a test, stopped when the test ends, also by a failed assertion.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the server as the README says, in a fresh directory; returns it and the
/// directory.
fn serve_as_the_readme_says(line: &str) -> (Server, Sandbox) {
    let s = Sandbox::new();
    let (child, addr) = common::serve(s.dir.path(), &serve_args(line));
    (Server { child, addr }, s)
}

fn get(addr: SocketAddr, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-w", " %{http_code}", &format!("http://{addr}{path}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_commands_the_readme_names_exist_and_work() {
    if !have("curl") {
        return;
    }
    let no_run = with_info("sh no_run");
    let all: Vec<String> = no_run.iter().flat_map(commands).collect();
    for b in &no_run {
        let out = Command::new("sh")
            .args(["-n", "-c", &b.text])
            .output()
            .unwrap();
        let r = common::Run::from(out);
        assert_eq!(r.code, 0, "README.md line {}: {}", b.line, r.stderr);
    }
    // The two commands a new user runs, the install step and the test command.
    for want in [
        "cargo run --release -p statefile-cli -- serve",
        "cargo install --path crates/statefile-cli",
        "statefile serve",
        "./test",
    ] {
        assert!(
            all.iter().any(|c| c.starts_with(want)),
            "README.md no longer says {want:?}: {all:?}"
        );
    }
    let test = root().join("test");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&test).unwrap().permissions());
    assert!(mode & 0o111 != 0, "./test is not executable");
    let manifest = std::fs::read_to_string(root().join("crates/statefile-cli/Cargo.toml")).unwrap();
    assert!(
        manifest.contains("name = \"statefile\""),
        "the installed binary is `statefile`"
    );
    // The first command and the HTTP section's, each run in a fresh directory (as on a
    // fresh clone, no ./data yet), serve documents.
    let first = all.iter().find(|c| c.starts_with("cargo run"));
    let http = all.iter().find(|c| c.starts_with("statefile serve"));
    for line in [first, http].into_iter().flatten() {
        let (server, s) = serve_as_the_readme_says(line);
        let addr = server.addr;
        assert_eq!(
            get(addr, "/healthz").split(' ').next_back(),
            Some("200"),
            "{line}"
        );
        assert_eq!(
            get(addr, "/v1/docs/a.json").split(' ').next_back(),
            Some("404"),
            "{line}"
        );
        drop(server);
        assert!(s.path("data").is_dir(), "{line}: no ./data");
    }
}

/// A console block as (command, expected output lines) pairs. Commands start with `$ `
/// and continue over lines ending in `\`; expected output runs to the next command,
/// trailing blank lines left out.
fn session(text: &str) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut continued = false;
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push((cmd.to_string(), Vec::new()));
            continued = cmd.ends_with('\\');
        } else if continued {
            let step = steps.last_mut().unwrap();
            step.0.push('\n');
            step.0.push_str(line);
            continued = line.ends_with('\\');
        } else {
            let step = steps.last_mut().expect("output before the first command");
            step.1.push(line.to_string());
        }
    }
    for (_, expected) in &mut steps {
        while expected.last().is_some_and(|l| l.trim().is_empty()) {
            expected.pop();
        }
    }
    steps
}

/// Whether `want` appears in `got` in order (other lines may come between).
fn in_order(want: &[String], got: &[&str]) -> bool {
    let mut got = got.iter();
    want.iter().all(|w| got.any(|g| g == w))
}

#[test]
fn the_curl_session_shows_what_the_server_answers() {
    if !have("curl") {
        return;
    }
    let serve = with_info("sh no_run")
        .iter()
        .flat_map(commands)
        .find(|c| c.starts_with("statefile serve"))
        .expect("README.md's HTTP section says how to start the server");
    let (server, s) = serve_as_the_readme_says(&serve);
    let addr = server.addr;
    let sessions = with_info("console");
    assert!(!sessions.is_empty(), "README.md lost its curl session");
    for b in sessions {
        let steps = session(&b.text);
        assert!(
            steps.len() >= 5,
            "README.md line {}: a short session",
            b.line
        );
        for (cmd, expected) in steps {
            assert!(cmd.contains("localhost:7878"), "{cmd}");
            let run = cmd.replace("localhost:7878", &addr.to_string());
            let r = sh(s.dir.path(), &run);
            assert_eq!(r.code, 0, "{cmd}: {}", r.stderr);
            let got: Vec<&str> = r.stdout.lines().map(|l| l.trim_end_matches('\r')).collect();
            assert!(
                in_order(&expected, &got),
                "README.md line {}:\n$ {cmd}\nshows\n{}\nbut the server answered\n{}",
                b.line,
                expected.join("\n"),
                got.join("\n")
            );
        }
    }
}

#[test]
fn the_library_snippet_builds_and_runs_as_a_new_project() {
    // The `[dependencies]` that name the library, and the Rust block after them.
    let all = blocks();
    let at = all
        .iter()
        .position(|b| b.info == "toml" && b.text.contains("statefile = {"))
        .expect("README.md says how to depend on the library in a ```toml block");
    let deps = &all[at];
    let snippet = all[at..]
        .iter()
        .find(|b| b.info.split(',').next() == Some("rust"))
        .expect("README.md has a ```rust example after its [dependencies]");
    assert!(
        !snippet
            .text
            .lines()
            .any(|l| l.trim_start().starts_with("# ")),
        "the snippet has hidden doc-test lines: pasted, it would not compile"
    );
    let library = root().join("crates/statefile").canonicalize().unwrap();
    let deps = deps.text.replace(
        "path/to/statefile/crates/statefile",
        library.to_str().unwrap(),
    );
    assert!(deps.contains(library.to_str().unwrap()), "{deps}");
    // A fresh project under this crate's scratch space, kept between runs so a rerun
    // is incremental; the workspace's Cargo.lock pins the same dependency versions.
    let project = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-library");
    let _ = std::fs::remove_dir_all(project.join("data"));
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"readme-example\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n{deps}\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(project.join("src/main.rs"), &snippet.text).unwrap();
    std::fs::copy(root().join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let out = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .args(["run", "--quiet", "--offline"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", project.join("target"))
        .output()
        .unwrap();
    let r = common::Run::from(out);
    assert_eq!(r.code, 0, "README.md line {}: {}", snippet.line, r.stderr);
    assert_eq!(r.stdout, "cases: [\"case-1\"], servers: [\"db1\"]\n");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.join("data/view/resData.json")).unwrap())
            .unwrap();
    assert_eq!(saved, json!({"cases": ["case-1"]}));
}

#[test]
fn the_declared_licenses_are_in_the_repository() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("license = \"MIT OR Apache-2.0\""),
        "update this test with the workspace's license"
    );
    for (file, first_words) in [
        ("LICENSE-MIT", "MIT License"),
        ("LICENSE-APACHE", "Apache License"),
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(text.trim_start().starts_with(first_words), "{file}");
        assert!(
            README.contains(&format!("({file})")),
            "README.md links {file}"
        );
    }
    let apache = std::fs::read_to_string(root().join("LICENSE-APACHE")).unwrap();
    assert!(
        apache.contains("Version 2.0, January 2004")
            && apache.contains("END OF TERMS AND CONDITIONS")
    );
}

#[test]
fn cargo_test_leaves_the_benchmarks_out() {
    // Regression: `cargo test` (the README's ./test) built the benchmark crate, bundled
    // SQLite and criterion included, though Cargo.toml said it never did.
    let out = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |key: &str| -> Vec<String> {
        meta[key]
            .as_array()
            .unwrap_or_else(|| panic!("cargo metadata has no {key}"))
            .iter()
            .map(|id| {
                let id = id.as_str().unwrap();
                let path = id.split('#').next().unwrap();
                path.rsplit('/').next().unwrap().to_string()
            })
            .collect()
    };
    let members = names("workspace_members");
    let default = names("workspace_default_members");
    assert!(
        members.contains(&"statefile-bench".to_string()),
        "{members:?}"
    );
    assert!(
        !default.contains(&"statefile-bench".to_string()),
        "{default:?}"
    );
    for tested in [
        "statefile",
        "statefile-cli",
        "statefile-server",
        "statefile-crashtest",
    ] {
        assert!(default.contains(&tested.to_string()), "{default:?}");
    }
}
