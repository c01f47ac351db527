//! Deterministic simulation of the balancing core.
//!
//! One seed drives everything: clients (IPv4 and IPv6 addresses, good
//! queries, retransmits, short, response, malformed and oversized
//! datagrams, TCP connections), scripted backends (answer, answer late,
//! hang, die, lose their socket, return, speak only the original protocol,
//! send garbage, send answers nobody asked for) and an invented clock.
//! After every step the core is checked against its invariants
//! (`sim/invariants.rs`): every datagram counted once; at most one answer
//! per query asked and none unasked; a query replayed at most once; remote
//! counts exact; no bound exceeded; no frame before hello and no IPv6
//! client to a backend without the extension; every faulted backend
//! reconnected on the back-off schedule; draining ends in time.
//!
//! 128 seeds of `SIM_STEPS` (default 10,000) steps run, in four tests;
//! `SIM_SEED=N` replays one seed (`SIM_TRACE=1` shows the core's log).
//! A failure prints its seed.

mod sim {
    pub(crate) mod backend;
    pub(crate) mod cached;
    pub(crate) mod dns;
    pub(crate) mod invariants;
    pub(crate) mod rng;
    pub(crate) mod tcp;
    pub(crate) mod world;
}

use mname_balancer::core::Phase;
use sim::world::World;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run one seed; the first violations found, with the step.
fn run(seed: u64, steps: u64) -> Result<World, String> {
    let mut world = World::new(seed);
    for _ in 0..steps {
        world.step();
        let v = world.check();
        if !v.is_empty() {
            return Err(format!(
                "seed {seed}, step {}: {}\nreplay: SIM_SEED={seed} cargo test --test simulation",
                world.steps,
                v.join("; ")
            ));
        }
    }
    // Then a SIGTERM: the core must drain and exit within its grace.
    world.terminate();
    for _ in 0..100_000 {
        if world.phase() == Phase::Exit {
            return Ok(world);
        }
        world.step();
        let v = world.check();
        if !v.is_empty() {
            return Err(format!(
                "seed {seed}, draining, step {}: {}",
                world.steps,
                v.join("; ")
            ));
        }
    }
    Err(format!("seed {seed}: never exited after SIGTERM"))
}

/// Run seeds `range` (or the one in `SIM_SEED`), fail with every seed
/// that broke an invariant, and check that the runs went where they
/// should: every kind of drop, fault, replay and answer happened in some
/// seed (a simulation that stopped reaching a path would prove nothing).
fn run_seeds(range: std::ops::RangeInclusive<u64>) {
    let steps = env_number("SIM_STEPS", 10_000);
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => range.collect(),
    };
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeMap::<&str, u64>::new();
    for &seed in &seeds {
        match run(seed, steps) {
            Ok(world) => {
                for (name, n) in world.exercised() {
                    *seen.entry(name).or_default() += n;
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    if seeds.len() > 1 {
        let missing: Vec<_> = seen.iter().filter(|(_, n)| **n == 0).collect();
        assert!(
            missing.is_empty(),
            "never exercised: {missing:?} (all: {seen:?})"
        );
    }
}

// Four groups of 32 seeds, so that the test runner spreads them over the
// cores: 128 seeds of 10,000 steps each, then a drain.
#[test]
fn seeds_1_to_32() {
    run_seeds(1..=32);
}

#[test]
fn seeds_33_to_64() {
    run_seeds(33..=64);
}

#[test]
fn seeds_65_to_96() {
    run_seeds(65..=96);
}

#[test]
fn seeds_97_to_128() {
    run_seeds(97..=128);
}
