//! Measures sled insert+flush latency for 2 KB records (profiling aid for the appender).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("flush-probe-{}", std::process::id()));
    for (name, cfg) in [
        ("default", sled::Config::new()),
        ("no background flush", sled::Config::new().flush_every_ms(None)),
        ("high throughput", sled::Config::new().mode(sled::Mode::HighThroughput).flush_every_ms(None)),
    ] {
        let _ = std::fs::remove_dir_all(&dir);
        let db = cfg.path(&dir).open()?;
        let tree = db.open_tree("log/0")?;
        let body = vec![b'x'; 2048];
        let mut lat = Vec::new();
        for i in 0u64..2000 {
            let t = std::time::Instant::now();
            tree.insert(i.to_be_bytes(), body.as_slice())?;
            db.flush()?;
            lat.push(t.elapsed());
        }
        lat.sort();
        println!("{name}: p50 {:?} p99 {:?}", lat[1000], lat[1980]);
        drop(tree);
        drop(db);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
