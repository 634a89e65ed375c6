//! Micro-benchmarks of the library's hot paths: serialize+write, read+parse, lock
//! acquire/release, version hash. `cargo bench -p statefile-bench`.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use statefile::{Doc, Durability, Options, Version};

fn doc_7kb() -> Value {
    json!({"items": (0..110).map(|i| json!({"id": i, "name": format!("item-{i:06}"), "ok": i % 3 == 0})).collect::<Vec<_>>()})
}

fn hot_paths(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let v = doc_7kb();
    let bytes = statefile::to_vec(&v, statefile::Format::Pretty).unwrap();

    // The CPU side of a write: no syncs, so the disk does not dominate.
    let nosync: Doc<Value> = Doc::open_with(
        dir.path().join("w.json"),
        Options::new().durability(Durability::None).backups(0),
    )
    .unwrap();
    let mut n = 0u64;
    c.bench_function("serialize+write 7KB (durability none)", |b| {
        b.iter(|| {
            n += 1;
            let mut x = v.clone();
            x["n"] = json!(n);
            nosync.write(&x).unwrap()
        })
    });
    let durable: Doc<Value> =
        Doc::open_with(dir.path().join("d.json"), Options::new().backups(0)).unwrap();
    c.bench_function("serialize+write 7KB (durability full)", |b| {
        b.iter(|| {
            n += 1;
            let mut x = v.clone();
            x["n"] = json!(n);
            durable.write(&x).unwrap()
        })
    });

    let r: Doc<Value> = Doc::open(dir.path().join("w.json")).unwrap();
    c.bench_function("read+parse 7KB", |b| b.iter(|| r.read().unwrap()));
    c.bench_function("read 7KB through the cache", |b| {
        b.iter(|| r.read_cached().unwrap())
    });
    c.bench_function("lock acquire+release", |b| {
        b.iter(|| drop(r.lock().unwrap()))
    });
    c.bench_function("version hash 7KB", |b| b.iter(|| Version::of(&bytes)));
    let mb = vec![b'x'; 1 << 20];
    c.bench_function("version hash 1MB", |b| b.iter(|| Version::of(&mb)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = hot_paths
}
criterion_main!(benches);
