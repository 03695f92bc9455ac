//! Gossip benchmark (scenario harness): what sealing costs membership.
//!
//! Rounds alternate between a cluster gossiping in clear (the same-run baseline) and
//! the same cluster sealed with a gossip key, each of `DOPPEL_BENCH_NODES` memberships
//! (default 8) in this process on loopback, with the default membership settings:
//!
//! - **converge**: from the seed's start until every node sees every other live (the
//!   others start right after the seed, seeded by it);
//! - **detect**: from one node's stop until every other node sees it gone.
//!
//! Reported as medians over `DOPPEL_BENCH_ROUNDS` rounds of each (default 4), with the
//! sealed ÷ clear ratio, and the datagrams and bytes the sealed rounds carried. The last
//! line is JSON.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::env_or;
use doppel::cluster::NodeRole;
use doppel::cluster::config::MembershipSettings;
use doppel::cluster::membership::{Announcement, Membership};
use doppel::cluster::seal::{GossipKey, GossipKeys, KEY_LEN};

/// Longest a round may take to converge or detect before the bench gives up.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

fn announcement(i: usize) -> Announcement {
    Announcement {
        node_id: format!("edge-{i:02}"),
        role: NodeRole::Edge,
        node_addr: SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16)),
        api_addr: None,
        owns: vec![format!("acme/plant-{i:02}")],
        mirrors: Vec::new(),
    }
}

fn keys(sealed: bool) -> Option<GossipKeys> {
    sealed.then(|| GossipKeys::new(vec![GossipKey::from_bytes(&[42; KEY_LEN])]).unwrap())
}

/// What one round measured.
struct Round {
    converge: Duration,
    detect: Duration,
    datagrams: u64,
}

async fn round(nodes: usize, sealed: bool) -> Round {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let settings = MembershipSettings::default();
    let started = Instant::now();
    let seed = Membership::start(
        "bench",
        announcement(0),
        local,
        local,
        Vec::new(),
        &settings,
        keys(sealed),
    )
    .await
    .unwrap();
    let seeds = vec![seed.gossip_addr().to_string()];
    let mut members = vec![seed];
    for i in 1..nodes {
        members.push(
            Membership::start(
                "bench",
                announcement(i),
                local,
                local,
                seeds.clone(),
                &settings,
                keys(sealed),
            )
            .await
            .unwrap(),
        );
    }
    for member in &members {
        assert!(
            member.wait_for_live(nodes, ROUND_LIMIT).await,
            "the cluster did not converge"
        );
    }
    let converge = started.elapsed();

    let stopped = members.pop().unwrap();
    let stopped_at = Instant::now();
    stopped.shutdown().await;
    for member in &members {
        let mut live = member.watch();
        let gone =
            tokio::time::timeout(ROUND_LIMIT, live.wait_for(|live| live.len() < nodes)).await;
        assert!(gone.is_ok(), "the stopped node was not detected");
    }
    let detect = stopped_at.elapsed();
    let datagrams = members
        .iter()
        .filter_map(|m| m.seal_counters())
        .map(|c| c.sent.load(Ordering::Relaxed))
        .sum();
    for member in members {
        member.shutdown().await;
    }
    Round {
        converge,
        detect,
        datagrams,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let nodes = env_or("DOPPEL_BENCH_NODES", 8).max(2);
    let rounds = env_or("DOPPEL_BENCH_ROUNDS", 4).max(1);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async move {
        let (mut clear, mut sealed) = (Vec::new(), Vec::new());
        let mut sealed_datagrams = 0;
        for r in 0..rounds {
            let plain = round(nodes, false).await;
            let closed = round(nodes, true).await;
            println!(
                "round {r}: converge clear {:.0} ms, sealed {:.0} ms; detect clear {:.0} ms, sealed {:.0} ms",
                plain.converge.as_secs_f64() * 1e3,
                closed.converge.as_secs_f64() * 1e3,
                plain.detect.as_secs_f64() * 1e3,
                closed.detect.as_secs_f64() * 1e3,
            );
            sealed_datagrams += closed.datagrams;
            clear.push(plain);
            sealed.push(closed);
        }
        let ms = |rounds: &[Round], f: fn(&Round) -> Duration| {
            median(rounds.iter().map(|r| f(r).as_secs_f64() * 1e3).collect())
        };
        let (clear_converge, sealed_converge) = (ms(&clear, |r| r.converge), ms(&sealed, |r| r.converge));
        let (clear_detect, sealed_detect) = (ms(&clear, |r| r.detect), ms(&sealed, |r| r.detect));
        println!(
            "{nodes} nodes, median of {rounds}: converge {clear_converge:.0} ms clear, {sealed_converge:.0} ms sealed; \
             detect {clear_detect:.0} ms clear, {sealed_detect:.0} ms sealed; {sealed_datagrams} sealed datagrams"
        );
        println!(
            "{{\"scenario\":\"gossip\",\"nodes\":{nodes},\"rounds\":{rounds},\"clear_converge_ms\":{clear_converge:.0},\"sealed_converge_ms\":{sealed_converge:.0},\"converge_ratio\":{:.3},\"clear_detect_ms\":{clear_detect:.0},\"sealed_detect_ms\":{sealed_detect:.0},\"detect_ratio\":{:.3},\"sealed_datagrams\":{sealed_datagrams}}}",
            sealed_converge / clear_converge,
            sealed_detect / clear_detect,
        );
    });
}
