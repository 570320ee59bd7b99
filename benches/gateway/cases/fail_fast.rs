//! Case 3, fail-fast: DNB hanging (sandbox `timeout` fault). DNB's p99 once its breaker is
//! open (served stale) and Nordea's p99 beside it, against the same reads at the live
//! gateway, whose banks are healthy (the hanging DNB is at a sandbox of its own). The two
//! take turns for five rounds; each reports its median round by p99, and Nordea's change is
//! the median of the rounds' changes, each against the healthy run of its round.

use bankgate_actors::{BankId, ProviderId};
use bankgate_sandbox::faults::{FaultKind, FaultSpec};
use serde_json::{Value, json};

use super::{LIVE_RATE_PER_S, LIVE_SECONDS, Outcome, ROUNDS, listed, median, median_round};
use crate::bench::{Bench, ConnectedAt, add_fault};
use crate::load::{Figures, fixed_rate, success};

/// DNB and Nordea read at once at `at`, at half the live rate each.
async fn side_by_side(
    bench: &Bench,
    at: &ConnectedAt,
    dnb_case: &str,
    nordea_case: &str,
) -> (Figures, Figures) {
    let half = LIVE_RATE_PER_S / 2;
    let read = |bank: &'static str| move || bench.account_read(&bench.token, at, bank);
    tokio::join!(
        fixed_rate(dnb_case, half, LIVE_SECONDS, read("dnb"), success),
        fixed_rate(nordea_case, half, LIVE_SECONDS, read("nordea"), success),
    )
}

pub async fn run(bench: &Bench) -> Outcome {
    let live_at = bench.connected_at(&bench.live).await;
    let hanging_at = bench.connected_at(&bench.hanging).await;
    // DNB's last-known balance, to be served stale once the bank hangs (and Nordea's
    // connection warmed).
    for bank in ["dnb", "nordea"] {
        let read = bench
            .account_read(&bench.token, &hanging_at, bank)
            .send()
            .await
            .expect("read");
        assert!(read.status().is_success(), "{bank} reads live at first");
    }
    add_fault(
        &bench.hanging_sandbox,
        FaultSpec::new(ProviderId::Psd2, FaultKind::Timeout).with_bank(BankId::Dnb),
    )
    .await;
    // Three failed reads open DNB's breaker; from then on DNB is served stale at once. They
    // come from three sessions, since one session's concurrent reads are coalesced into one.
    let trips: Vec<_> = (0..3)
        .map(|n| {
            let token = bench.token_for("bench-user", &format!("trip-{n}"));
            bench.account_read(&token, &hanging_at, "dnb").send()
        })
        .collect();
    futures_util::future::join_all(trips).await;
    // DNB healthy, Nordea beside it; DNB hanging, Nordea beside it.
    let mut runs: [Vec<Figures>; 4] = Default::default();
    for _ in 0..ROUNDS {
        let (dnb, nordea) = side_by_side(
            bench,
            &live_at,
            "DNB read, healthy",
            "Nordea read, DNB healthy",
        )
        .await;
        let (dnb_down, nordea_beside) = side_by_side(
            bench,
            &hanging_at,
            "DNB read, DNB hanging (breaker open)",
            "Nordea read, DNB hanging",
        )
        .await;
        for (runs, figures) in runs.iter_mut().zip([dnb, nordea, dnb_down, nordea_beside]) {
            runs.push(figures);
        }
    }
    let stale: Value = bench
        .account_read(&bench.token, &hanging_at, "dnb")
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("body");
    assert_eq!(stale["stale"], true, "DNB is served stale: {stale}");
    let nordea_changes: Vec<f64> = runs[3]
        .iter()
        .zip(&runs[1])
        .map(|(beside, healthy)| beside.p99_ms / healthy.p99_ms - 1.0)
        .collect();
    let nordea_change = median(nordea_changes.clone());
    let p99s = runs
        .each_ref()
        .map(|runs| runs.iter().map(|f| f.p99_ms).collect::<Vec<f64>>());
    let rows = runs.map(|runs| median_round(runs, |f| f.p99_ms));
    let [_, nordea_before, dnb_down, nordea_beside] = &rows;
    let summary = format!(
        "3. DNB hanging, medians of {ROUNDS} rounds of {LIVE_SECONDS} s by p99, taking turns with healthy ones: DNB p99 {:.3} ms served stale (target ≤ 5 ms); Nordea p99 {:.3} ms vs {:.3} ms healthy, median change {:+.1} % against the healthy run of each round (target within 10 %; round by round {}); p99 round by round (ms): DNB healthy {}; Nordea healthy {}; DNB hanging {}; Nordea beside it {}",
        dnb_down.p99_ms,
        nordea_beside.p99_ms,
        nordea_before.p99_ms,
        nordea_change * 100.0,
        nordea_changes
            .iter()
            .map(|c| format!("{:+.1} %", c * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        listed(&p99s[0], 3),
        listed(&p99s[1], 3),
        listed(&p99s[2], 3),
        listed(&p99s[3], 3),
    );
    let report = json!({
        "dnb_p99_ms": dnb_down.p99_ms,
        "nordea_p99_change": nordea_change,
        "nordea_p99_change_by_round": nordea_changes,
        "p99_ms_by_round": {
            "dnb_healthy": p99s[0],
            "nordea_healthy": p99s[1],
            "dnb_hanging": p99s[2],
            "nordea_beside_hanging": p99s[3],
        },
    });
    Outcome {
        rows: rows.into(),
        summary,
        key: "fail_fast",
        report,
    }
}
