//! Real processes against the binary: concurrent appends from shells, and `put` killed
//! with SIGKILL mid-write.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::common::{BIN, Sandbox, temps};

#[test]
fn eight_shells_append_a_hundred_times_each_without_losing_one() {
    let s = Sandbox::new();
    let shells: Vec<_> = (0..8)
        .map(|w| {
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "i=0; while [ $i -lt 100 ]; do '{BIN}' -q append --lock-timeout 120 data.json /items \"\\\"w{w}-$i\\\"\" || exit 1; i=$((i+1)); done"
                ))
                .current_dir(s.dir.path())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut sh in shells {
        assert!(sh.wait().unwrap().success());
    }
    let v = s.json("data.json");
    let items: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = items.iter().copied().collect();
    assert_eq!(items.len(), 800);
    assert_eq!(unique.len(), 800);
    for w in 0..8 {
        for i in 0..100 {
            assert!(unique.contains(format!("w{w}-{i}").as_str()));
        }
    }
    s.run(&["verify", "."]).ok();
}

/// A document whose content checks itself: every element equals `version`.
fn big_version(version: u64) -> Vec<u8> {
    let data = vec![version; 400_000];
    serde_json::to_vec(&serde_json::json!({"version": version, "data": data})).unwrap()
}

#[test]
fn put_killed_mid_write_never_leaves_a_broken_file() {
    let s = Sandbox::new();
    let inputs: Vec<_> = (0..2)
        .map(|k| {
            let p = s.path(&format!("input-{k}.json"));
            std::fs::write(&p, big_version(k + 1)).unwrap();
            p
        })
        .collect();
    let put = |k: usize| {
        s.cmd(&["put", "big.json"])
            .stdin(Stdio::from(std::fs::File::open(&inputs[k]).unwrap()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one put takes here, to aim the kills inside it.
    let t = Instant::now();
    assert!(put(0).wait().unwrap().success());
    let full = t.elapsed();
    println!(
        "one put of {} bytes takes {full:?}",
        std::fs::metadata(&inputs[0]).unwrap().len()
    );

    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64;
    let kills = 30;
    let mut mid_write = 0;
    let mut verified_stale = false;
    for i in 0..kills {
        let mut child = put(i % 2);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let frac = (seed % 1000) as f64 / 1000.0;
        // Most of a put is reading and parsing stdin; the write starts when its temp
        // file appears. Wait for that (most of the time), then kill at a random moment.
        if i % 5 != 0 {
            let deadline = Instant::now() + full * 4;
            while temps(s.dir.path()).is_empty()
                && child.try_wait().unwrap().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
            std::thread::sleep(full.mul_f64(0.1 * frac));
        } else {
            std::thread::sleep(full.mul_f64(frac));
        }
        let _ = child.kill();
        child.wait().unwrap();
        // Whatever the moment, the file is one complete version.
        let v = s.json("big.json");
        let version = v["version"].as_u64().unwrap();
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 400_000);
        assert!(data.iter().all(|x| x.as_u64() == Some(version)));
        if !temps(s.dir.path()).is_empty() {
            mid_write += 1;
            if !verified_stale {
                // verify reports the dead writer's temp; recover removes it.
                let r = s.run(&["verify", "big.json"]).code(5);
                assert!(r.stdout.contains("stale temp"), "{}", r.stdout);
                s.run(&["recover", "big.json"]).ok();
                assert!(temps(s.dir.path()).is_empty());
                s.run(&["verify", "big.json"]).ok();
                verified_stale = true;
            }
        }
        s.run(&["recover", "."]).ok();
        assert!(temps(s.dir.path()).is_empty());
    }
    println!("{kills} kills, {mid_write} landed mid-write");
    assert!(
        mid_write * 4 >= kills,
        "only {mid_write} of {kills} kills left a temp file: they did not land mid-write"
    );
    assert!(verified_stale);
}
