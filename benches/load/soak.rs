//! The soak: half the measured maximum for a long run. RSS and open file descriptors must
//! stay flat (under 5% growth from the first sample to the last) with no error.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::loadgen::{self, Expect, LoadSpec};
use crate::procs::Server;
use crate::{common, cycle, key_requests};

#[derive(clap::Args, Clone)]
pub struct SoakArgs {
    /// The release `redmine-authz` binary.
    #[arg(long)]
    server: PathBuf,
    /// How long to hold the load.
    #[arg(long, default_value = "600")]
    seconds: u64,
    /// The core the server is pinned to (run this generator on another).
    #[arg(long, default_value = "0")]
    server_core: String,
    /// Where soak.md goes.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
}

const SAMPLE: u64 = 30;

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub async fn soak(args: SoakArgs) -> Result<(), Box<dyn std::error::Error>> {
    common::prepare_database(10_000).await?;
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let url = common::database_url(&common::database_name(10_000));
    // Production defaults: in-process cache, audit log on, throttling on.
    let server = Server::gate(&args.server, &args.server_core, &url, &[], &logs, "soak").await;
    let clients = loadgen::connect(server.port, 4).await?;
    let hot = cycle(key_requests(1..=1_000));

    let max = loadgen::run(
        &clients,
        &LoadSpec::saturating(400_000, 10),
        hot.clone(),
        Expect::Allow,
    )
    .await;
    let rate = (max.per_second() / 2.0).max(1.0);
    eprintln!(
        "soak: maximum {:.0}/s, holding {rate:.0}/s for {} s",
        max.per_second(),
        args.seconds
    );

    let mut rows = Vec::new();
    let (mut sent, mut errors) = (0u64, 0u64);
    for chunk in 1..=args.seconds.div_ceil(SAMPLE) {
        let spec = LoadSpec {
            connections: 4,
            concurrency: 32,
            requests: (rate * SAMPLE as f64) as u64,
            max_duration: Duration::from_secs(SAMPLE + 5),
            rate: Some(rate),
        };
        let result = loadgen::run(&clients, &spec, hot.clone(), Expect::Allow).await;
        sent += result.sent;
        errors += result.errors + result.unexpected;
        let row = (
            chunk * SAMPLE,
            server.rss_bytes(),
            open_descriptors(server.pid()),
            result.per_second(),
            result.histogram.value_at_quantile(0.99) as f64 / 1e6,
        );
        eprintln!(
            "soak: t={}s rss={:.1} MiB fds={} {:.0}/s p99={:.2} ms errors={errors}",
            row.0,
            row.1 as f64 / 1048576.0,
            row.2,
            row.3,
            row.4
        );
        rows.push(row);
    }
    let (first, last) = (
        rows.first().ok_or("no samples")?,
        rows.last().ok_or("no samples")?,
    );
    let growth = |a: f64, b: f64| if a > 0.0 { 100.0 * (b - a) / a } else { 0.0 };
    let rss_growth = growth(first.1 as f64, last.1 as f64);
    let fd_growth = growth(first.2 as f64, last.2 as f64);
    let flat = rss_growth < 5.0 && fd_growth < 5.0 && errors == 0;

    let mut md = String::new();
    writeln!(
        md,
        "# Soak: {} s at {rate:.0} Checks/s (half of the {:.0}/s maximum)\n",
        args.seconds,
        max.per_second()
    )?;
    writeln!(
        md,
        "| t (s) | RSS (MiB) | open fds | Checks/s | p99 (ms) |\n|---:|---:|---:|---:|---:|"
    )?;
    for (t, rss, fds, rps, p99) in &rows {
        writeln!(
            md,
            "| {t} | {:.1} | {fds} | {rps:.0} | {p99:.2} |",
            *rss as f64 / 1048576.0
        )?;
    }
    writeln!(md, "\n{sent} Checks, {errors} errors or unexpected answers. RSS growth {rss_growth:+.1}%, open fds growth {fd_growth:+.1}% (first sample to last): {}.", if flat { "flat" } else { "NOT flat" })?;
    std::fs::write(args.out.join("soak.md"), &md)?;
    print!("{md}");
    if flat {
        Ok(())
    } else {
        Err("soak: growth or errors over the limits".into())
    }
}
