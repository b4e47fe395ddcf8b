//! Profiling aid: parses one realistic 2 KB event N times (`valgrind --tool=callgrind`).
use paystate_testkit::scenario::{generate, Scenario};
use paystate_testkit::synth::Rng;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let mut rng = Rng::new(1);
    let (events, _) = generate(Scenario::CardSuccess, &mut rng, 1_718_900_000);
    let body = events[2].body();
    eprintln!("{} bytes ({})", body.len(), events[2].event_type);
    let mut ok = 0usize;
    for _ in 0..n {
        if paystate_stripe::parse_event(std::hint::black_box(&body)).is_ok() {
            ok += 1;
        }
    }
    println!("{ok}");
}
