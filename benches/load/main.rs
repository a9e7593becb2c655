//! The load benchmark: every scenario of BENCHMARKS.md against the real `redmine-authz`
//! binary, each next to the constant-allow floor measured in the same run.
//!
//! The servers run pinned to one core (`--server-core`, default 0); run this binary pinned to
//! the other (`taskset -c 1`), as scripts/bench.sh does. `cargo bench` alone only prints usage.
//!
//! ```text
//! load prepare                                   create/seed the bench databases (kept)
//! load run --server BIN --floor BIN --out DIR    all scenarios; DIR gets results.json,
//!                                                summary.md and latency.svg
//! ```

#[path = "../common/mod.rs"]
mod common;
mod loadgen;
mod procs;
mod redmine;
mod report;
mod requests;
mod scenarios;
mod soak;
#[path = "../../tests/support/mod.rs"]
mod support;

// As the gate and the floor do: the generator must not be slower than the server it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use loadgen::{Expect, LoadSpec, RequestSource};
use procs::Server;
use redmine_authz::envoy::proto::envoy::service::auth::v3::CheckRequest;
use report::{Check, Report, Scenario};
use scenarios::{Floor, GateRun, GATE_RUNS};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create and seed the bench databases (1k, 10k and 1M users), unless already there.
    Prepare,
    /// Run every scenario and write the results.
    Run(RunArgs),
    /// Hold half the maximum load for a long run, watching memory and descriptors.
    Soak(soak::SoakArgs),
    /// Drive a server that is already running (for profiling it with perf).
    Drive(DriveArgs),
}

#[derive(clap::Args)]
struct DriveArgs {
    /// The gRPC port of the running server.
    #[arg(long)]
    port: u16,
    /// Which requests: cached API keys, Basic, a wrong key, or random invalid keys.
    #[arg(long, value_parser = ["api-key", "basic", "wrong-key", "flood", "valid-in-flood"], default_value = "api-key")]
    mix: String,
    #[arg(long, default_value = "10")]
    seconds: u64,
    /// How many distinct API keys the api-key mix cycles through (bench users 1..=N).
    #[arg(long, default_value = "1000")]
    keys: u64,
    /// Make the api-key mix POSTs with a JSON body of this many bytes, as Envoy sends them
    /// with `with_request_body` (0: GETs without a body).
    #[arg(long, default_value = "0")]
    body: usize,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// The release `redmine-authz` binary.
    #[arg(long)]
    server: PathBuf,
    /// The floor server binary (the `floor` bench).
    #[arg(long)]
    floor: PathBuf,
    /// Where results.json, summary.md and latency.svg go.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// Where criterion wrote its estimates (decision core, cache tiers), to include them.
    #[arg(long, default_value = "target/criterion")]
    criterion: PathBuf,
    /// The core the servers are pinned to (run this generator on another).
    #[arg(long, default_value = "0")]
    server_core: String,
    /// Redmine to compare with (skipped when it does not answer).
    #[arg(long, default_value = "127.0.0.1:3000")]
    redmine: String,
    /// Shorter runs, for checking the benchmark itself.
    #[arg(long)]
    quick: bool,
}

const MEMORY_PRINCIPALS: u64 = 100_000;
const POOL: u32 = 16;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.command {
        None => {
            eprintln!("load: run with `prepare` or `run` (see scripts/bench.sh)");
            Ok(())
        }
        Some(Cmd::Prepare) => {
            for users in [1_000, 10_000, 1_000_000] {
                let started = Instant::now();
                common::prepare_database(users).await?;
                eprintln!(
                    "{} ready ({:.1?})",
                    common::database_name(users),
                    started.elapsed()
                );
            }
            Ok(())
        }
        Some(Cmd::Run(args)) => run(args).await,
        Some(Cmd::Soak(args)) => soak::soak(args).await,
        Some(Cmd::Drive(args)) => drive(args).await,
    }
}

async fn drive(args: DriveArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.mix == "valid-in-flood" {
        return drive_valid_in_flood(&args).await;
    }
    let (source, expect) = match args.mix.as_str() {
        "basic" => (
            cycle(
                redmine_authz::store::DEMO_USERS
                    .iter()
                    .filter(|u| ["admin", "alice", "bob"].contains(&u.login))
                    .map(|u| requests::basic(u.login, u.password))
                    .collect(),
            ),
            Expect::Allow,
        ),
        "wrong-key" => (cycle(vec![requests::wrong_key_query()]), Expect::AnyDeny),
        "flood" => (
            Arc::new(|_| requests::encode(&requests::flood_key())) as RequestSource,
            Expect::AnyDeny,
        ),
        _ if args.body > 0 => (
            cycle(
                key_requests(1..=args.keys)
                    .into_iter()
                    .map(|request| requests::with_body(request, args.body))
                    .collect(),
            ),
            Expect::Allow,
        ),
        _ => (cycle(key_requests(1..=args.keys)), Expect::Allow),
    };
    let clients = loadgen::connect(args.port, 4).await?;
    let spec = LoadSpec::saturating(u64::MAX, args.seconds);
    let result = loadgen::run(&clients, &spec, source, expect).await;
    eprintln!(
        "{} (body {} B): {:.0}/s, p50 {} µs, p99 {} µs, p99.9 {} µs, unexpected {}",
        args.mix,
        args.body,
        result.per_second(),
        result.histogram.value_at_quantile(0.5) / 1_000,
        result.histogram.value_at_quantile(0.99) / 1_000,
        result.histogram.value_at_quantile(0.999) / 1_000,
        result.unexpected
    );
    Ok(())
}

/// Cached valid keys at 2,000/s alone, then alongside a saturating flood, as the flood
/// scenario runs them: prints the valid Checks' latency both ways and the p99 ratio.
async fn drive_valid_in_flood(args: &DriveArgs) -> Result<(), Box<dyn std::error::Error>> {
    let valid_clients = loadgen::connect(args.port, 1).await?;
    let paced = LoadSpec {
        connections: 1,
        concurrency: 8,
        requests: 2_000 * args.seconds,
        max_duration: Duration::from_secs(args.seconds + 2),
        rate: Some(2_000.0),
    };
    let valid = cycle(key_requests(1..=args.keys));
    let alone = loadgen::run(&valid_clients, &paced, valid.clone(), Expect::Allow).await;
    let random: RequestSource = Arc::new(|_| requests::encode(&requests::flood_key()));
    let flood_spec = LoadSpec::saturating(u64::MAX, args.seconds + 1);
    let flood_clients = loadgen::connect(args.port, 4).await?;
    let flooding = tokio::spawn(async move {
        loadgen::run(&flood_clients, &flood_spec, random, Expect::AnyDeny).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = loadgen::run(&valid_clients, &paced, valid, Expect::Allow).await;
    let flood = flooding.await?;
    let p99 = |r: &loadgen::LoadResult| r.histogram.value_at_quantile(0.99) / 1_000;
    eprintln!(
        "valid-in-flood: alone p50 {} p99 {} µs; during p50 {} p99 {} p99.9 {} µs = {:.2}x; flood {:.0}/s; unexpected {}",
        alone.histogram.value_at_quantile(0.5) / 1_000,
        p99(&alone),
        during.histogram.value_at_quantile(0.5) / 1_000,
        p99(&during),
        during.histogram.value_at_quantile(0.999) / 1_000,
        p99(&during) as f64 / p99(&alone) as f64,
        flood.per_second(),
        alone.unexpected + during.unexpected + flood.unexpected
    );
    Ok(())
}

/// Run lengths: (requests, seconds) for saturating runs, scaled down by `--quick`.
struct Lengths {
    quick: bool,
}

impl Lengths {
    fn saturating(&self, requests: u64, seconds: u64) -> LoadSpec {
        if self.quick {
            LoadSpec::saturating(requests / 10, seconds.div_ceil(4))
        } else {
            LoadSpec::saturating(requests, seconds)
        }
    }

    fn paced(&self, rate: f64, seconds: u64, connections: usize, concurrency: usize) -> LoadSpec {
        let seconds = if self.quick {
            seconds.div_ceil(3)
        } else {
            seconds
        };
        LoadSpec {
            connections,
            concurrency,
            requests: (rate * seconds as f64) as u64,
            max_duration: Duration::from_secs(seconds + 2),
            rate: Some(rate),
        }
    }
}

struct Bench {
    args: RunArgs,
    logs: PathBuf,
    lengths: Lengths,
    redis_prefix: String,
}

impl Bench {
    async fn gate(&self, users: u64, flags: &[&str], name: &str) -> Server {
        let url = common::database_url(&common::database_name(users));
        let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
        Server::gate(
            &self.args.server,
            &self.args.server_core,
            &url,
            &flags,
            &self.logs,
            name,
        )
        .await
    }

    fn redis_flags(&self, scenario: &str) -> Vec<String> {
        vec![
            "--redis-url".into(),
            common::redis_url(),
            "--redis-key-prefix".into(),
            format!("{}{scenario}:", self.redis_prefix),
        ]
    }

    /// Starts the gate `run` describes and measures its scenarios, each checked against its
    /// targets.
    async fn gate_run(
        &self,
        run: &GateRun,
        floor_server: &Server,
        floor: &Scenario,
        checks: &mut Vec<Check>,
    ) -> Vec<Scenario> {
        let mut flags = run
            .redis
            .map(|name| self.redis_flags(name))
            .unwrap_or_default();
        flags.extend(run.flags.iter().map(|f| (*f).to_owned()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let server = self.gate(run.users, &flags, run.server).await;
        let mut measured = Vec::new();
        for scenario in run.scenarios {
            let spec = scenario.load.spec(&self.lengths);
            let source = cycle(scenario.requests.build());
            let label = (scenario.name, scenario.what);
            let result = match scenario.floor {
                Floor::Turns => {
                    self.beside_floor(
                        floor_server,
                        &server,
                        label,
                        scenario.warmup,
                        &spec,
                        source,
                        scenario.expect,
                    )
                    .await
                }
                Floor::Once => self
                    .measure(
                        &server,
                        label,
                        scenario.warmup,
                        &spec,
                        source,
                        scenario.expect,
                    )
                    .await
                    .against_floor(floor),
            };
            checks.extend(scenario.targets.iter().map(|target| target.check(&result)));
            measured.push(result);
        }
        measured
    }

    /// Measures `server` in turns with the floor: floor, gate, floor, ..., gate, floor, each
    /// gate turn a [`TURNS`]th of `spec`, each floor turn as long. Each gate turn's ratio is
    /// taken against the mean of the floor turns on either side, and the scenario's ratio is
    /// their median. This VM's speed drifts by up to a third within minutes and it stalls now
    /// and then: one floor measured before and one after a long run let a drift or a stall
    /// move a ratio by 8 points between two runs of the same binary.
    // `measure`'s arguments and the floor to take turns with.
    #[expect(clippy::too_many_arguments)]
    async fn beside_floor(
        &self,
        floor: &Server,
        server: &Server,
        (name, what): (&str, &str),
        warmup: u64,
        spec: &LoadSpec,
        source: RequestSource,
        expect: Expect,
    ) -> Scenario {
        let turn = LoadSpec {
            requests: spec.requests.div_ceil(TURNS as u64),
            max_duration: spec.max_duration / TURNS as u32,
            ..spec.clone()
        };
        let floor_source = cycle(key_requests(1..=1_000));
        let gate_clients = warmed_up(server, name, warmup, spec, &source, expect).await;
        let floor_clients =
            warmed_up(floor, "floor", 5_000, spec, &floor_source, Expect::Allow).await;

        let run_floor = || loadgen::run(&floor_clients, &turn, floor_source.clone(), Expect::Allow);
        let mut floor_before = run_floor().await;
        let mut floors = vec![floor_before.per_second()];
        let (mut rps_ratios, mut p99_ratios) = (Vec::new(), Vec::new());
        let mut histogram = loadgen::new_histogram();
        let (mut seconds, mut unexpected, mut cpu) = (0.0, 0, Duration::ZERO);
        for _ in 0..TURNS {
            let cpu_before = server.cpu_time();
            let gate = loadgen::run(&gate_clients, &turn, source.clone(), expect).await;
            cpu += server.cpu_time() - cpu_before;
            let floor_after = run_floor().await;
            let around =
                |f: fn(&loadgen::LoadResult) -> f64| (f(&floor_before) + f(&floor_after)) / 2.0;
            rps_ratios.push(gate.per_second() / around(loadgen::LoadResult::per_second));
            p99_ratios.push(p99(&gate) / around(p99));
            floors.push(floor_after.per_second());
            histogram
                .add(&gate.histogram)
                .expect("same histogram bounds");
            seconds += gate.elapsed.as_secs_f64();
            unexpected += gate.unexpected;
            floor_before = floor_after;
        }
        let (low, high) = range(&floors);
        let (lowest_ratio, highest_ratio) = range(&rps_ratios);
        let mut scenario = Scenario::new(
            name,
            &format!(
                "{what}; in {TURNS} turns with the floor ({low:.0}–{high:.0}/s), ratio per turn {lowest_ratio:.2}–{highest_ratio:.2}"
            ),
            &histogram,
            seconds,
            unexpected,
        );
        scenario.server_cpu = Some(cpu.as_secs_f64() / seconds);
        scenario.floor_rps_ratio = Some(median(&mut rps_ratios));
        scenario.floor_p99_ratio = Some(median(&mut p99_ratios));
        eprintln!(
            "  {name:<22} {:>8.0}/s  p50 {:>7.0} µs  p99 {:>7.0} µs  cpu {:>3.0}%  unexpected {}  x floor {:.2} (turns {lowest_ratio:.2}-{highest_ratio:.2}, floor {low:.0}-{high:.0}/s)",
            scenario.per_second,
            scenario.p50(),
            scenario.p99(),
            cpu.as_secs_f64() / seconds * 100.0,
            scenario.unexpected,
            scenario.floor_rps_ratio.unwrap_or(0.0),
        );
        scenario
    }

    /// Warms up, then measures `spec` against `server`, with the server's CPU share.
    async fn measure(
        &self,
        server: &Server,
        (name, what): (&str, &str),
        warmup: u64,
        spec: &LoadSpec,
        source: RequestSource,
        expect: Expect,
    ) -> Scenario {
        let clients = warmed_up(server, name, warmup, spec, &source, expect).await;
        let cpu = server.cpu_time();
        let result = loadgen::run(&clients, spec, source, expect).await;
        let busy = (server.cpu_time() - cpu).as_secs_f64() / result.elapsed.as_secs_f64();
        let mut scenario = Scenario::new(
            name,
            what,
            &result.histogram,
            result.elapsed.as_secs_f64(),
            result.unexpected,
        );
        scenario.server_cpu = Some(busy);
        eprintln!(
            "  {name:<22} {:>8.0}/s  p50 {:>7.0} µs  p99 {:>7.0} µs  p99.9 {:>7.0} µs  cpu {:>3.0}%  unexpected {}",
            scenario.per_second,
            scenario.p50(),
            scenario.p99(),
            scenario.micros[3],
            busy * 100.0,
            scenario.unexpected
        );
        scenario
    }
}

/// Gate turns of a ratio scenario, each between two floor turns ([`Bench::beside_floor`]).
const TURNS: usize = 5;

/// The middle value (the mean of the middle two for an even count); sorts `values`.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// (smallest, largest)
fn range(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::MAX, f64::MIN), |(low, high), &v| {
        (low.min(v), high.max(v))
    })
}

/// Clients connected to `server` and warmed up with `warmup` of `spec`'s requests, none of
/// them answered other than expected.
async fn warmed_up(
    server: &Server,
    name: &str,
    warmup: u64,
    spec: &LoadSpec,
    source: &RequestSource,
    expect: Expect,
) -> Vec<loadgen::Client> {
    let clients = loadgen::connect(server.port, spec.connections)
        .await
        .expect("connect");
    if warmup > 0 {
        let warm = LoadSpec {
            requests: warmup,
            rate: None,
            max_duration: Duration::from_secs(60),
            ..spec.clone()
        };
        let result = loadgen::run(&clients, &warm, source.clone(), expect).await;
        assert_eq!(
            result.unexpected, 0,
            "{name}: warm-up got unexpected answers"
        );
    }
    clients
}

fn p99(result: &loadgen::LoadResult) -> f64 {
    result.histogram.value_at_quantile(0.99) as f64
}

/// The requests, encoded once, over and over.
fn cycle(requests: Vec<CheckRequest>) -> RequestSource {
    let encoded: Arc<Vec<_>> = Arc::new(requests.iter().map(requests::encode).collect());
    Arc::new(move |i| encoded[(i % encoded.len() as u64) as usize].clone())
}

fn key_requests(range: impl Iterator<Item = u64>) -> Vec<CheckRequest> {
    range
        .map(|i| requests::api_key(&common::bench_key(i)))
        .collect()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {} logical CPUs, {memory} RAM, Linux {}; servers on core(s) {{server}}, load generator on the other",
        cores.max(2),
        kernel.trim()
    )
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    for users in [1_000, 10_000, 1_000_000] {
        common::prepare_database(users).await?;
    }
    let bench = Bench {
        lengths: Lengths { quick: args.quick },
        logs,
        redis_prefix: format!("authz-bench-{}-", std::process::id()),
        args: args.clone(),
    };
    let mut scenarios = Vec::new();
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    let hot_keys = key_requests(1..=1_000);

    eprintln!("floor");
    // Kept running: the targets' ratios use the floor measured again around each scenario.
    let floor_server = Server::floor(&args.floor, &args.server_core, &bench.logs).await;
    let (floor, floor_in_flood) = measure_floor(&bench, &floor_server, &hot_keys, &mut notes).await;

    eprintln!("gate scenarios");
    for run in GATE_RUNS {
        scenarios.extend(
            bench
                .gate_run(run, &floor_server, &floor, &mut checks)
                .await,
        );
    }
    // Reported beside Redmine's own answer to the same request, at the end.
    let wrong = scenarios.remove(
        scenarios
            .iter()
            .position(|s| s.name == "wrong_key")
            .expect("the wrong_key scenario"),
    );

    // A flood of random invalid keys; production settings (L1 + Redis, pool of POOL).
    scenarios.extend(
        flood(
            &bench,
            &floor_server,
            &hot_keys,
            &floor_in_flood,
            &mut checks,
        )
        .await,
    );
    let (floor_alone, floor_flooded) = floor_in_flood;
    scenarios.extend([floor_alone, floor_flooded]);

    eprintln!("memory");
    checks.extend(memory(&bench).await?);

    eprintln!("scale");
    scenarios.extend(scale(&bench, &floor, &mut checks).await);

    eprintln!("redmine");
    let redmine = against_redmine(&args.redmine, &floor, &wrong).await;
    scenarios.push(wrong);
    match redmine {
        Some((redmine, check)) => {
            checks.push(check);
            scenarios.push(redmine);
        }
        None => notes.push(format!("Redmine did not answer on {}; comparison skipped (bash tests/peers/redmine-oracle.sh start).", args.redmine)),
    }

    checks.extend(criterion_checks(&args.criterion));
    let report = Report {
        machine: machine().replace("{server}", &args.server_core),
        scenarios: std::iter::once(floor).chain(scenarios).collect(),
        checks,
        notes,
    };
    report.write(&args.out)?;
    println!("{}", report.markdown());
    common::delete_redis_prefix(&bench.redis_prefix).await;
    Ok(())
}

/// The floor, with the same requests as the cache-hit scenario, checked against h2load; and
/// the floor with paced valid Checks alone and during the same saturating flood as the
/// gate's: what the gRPC stack alone does to their latency (it allows the flood).
async fn measure_floor(
    bench: &Bench,
    server: &Server,
    hot_keys: &[CheckRequest],
    notes: &mut Vec<String>,
) -> (Scenario, (Scenario, Scenario)) {
    let spec = bench.lengths.saturating(400_000, 8);
    let floor = bench
        .measure(
            server,
            ("floor", "constant allow (tonic alone)"),
            20_000,
            &spec,
            cycle(hot_keys.to_vec()),
            Expect::Allow,
        )
        .await;
    if let Some(check) = h2load_check(server, &floor, bench).await {
        notes.push(check);
    }
    let in_flood = valid_in_flood(bench, server, "floor_", hot_keys, Expect::Allow).await;
    (floor, in_flood)
}

/// Valid cached users paced at 2,000/s without and during a flood, then the flood alone (with
/// the most database queries seen at once): the flood, alone and during scenarios, checked
/// against their targets (`floor_in_flood`: the floor's valid Checks, flooded alike).
async fn flood(
    bench: &Bench,
    floor: &Server,
    hot_keys: &[CheckRequest],
    floor_in_flood: &(Scenario, Scenario),
    checks: &mut Vec<Check>,
) -> [Scenario; 3] {
    let flags = bench.redis_flags("flood");
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let pool = POOL.to_string();
    flags.extend(["--db-max-connections", &pool]);
    let server = bench.gate(10_000, &flags, "flood").await;
    // The valid users first: measured after the flood scenario, their p99 without a flood
    // came out at 2.1 ms (0.5-0.6 ms on a gate not flooded before), and the ratio at 0.81x.
    let (alone, during) = valid_in_flood(bench, &server, "", hot_keys, Expect::AnyDeny).await;
    let most = Arc::new(AtomicI64::new(0));
    let sampler = tokio::spawn(sample_active_queries(
        common::database_url(&common::database_name(10_000)),
        most.clone(),
    ));
    let flood = bench
        .beside_floor(
            floor,
            &server,
            (
                "flood_invalid_keys",
                "random invalid keys (L1 + Redis, pool 16)",
            ),
            2_000,
            &bench.lengths.saturating(150_000, 8),
            Arc::new(|_| requests::encode(&requests::flood_key())),
            Expect::AnyDeny,
        )
        .await;
    sampler.abort();
    let most = most.load(Ordering::Relaxed);
    eprintln!("  most database queries at once: {most}");
    checks.push(
        scenarios::Target::FloorShare {
            what: "Flood of random invalid keys: denies/s",
            at_least: 0.5,
        }
        .check(&flood),
    );
    checks.push(Check::new(
        "Flood: database queries at once",
        format!("at most {most} seen (pool {POOL})"),
        &format!("<= --db-max-connections ({POOL})"),
        most <= i64::from(POOL),
    ));
    let (floor_alone, floor_during) = floor_in_flood;
    checks.push(Check::new(
        "Valid cached users' p99 during the flood",
        format!(
            "{:.0} µs vs {:.0} µs without = {:.2}x (the floor, flooded alike: {:.0} µs vs {:.0} µs = {:.2}x)",
            during.p99(),
            alone.p99(),
            during.p99() / alone.p99(),
            floor_during.p99(),
            floor_alone.p99(),
            floor_during.p99() / floor_alone.p99()
        ),
        "<= 2x without the flood",
        during.p99() <= 2.0 * alone.p99(),
    ));
    [flood, alone, during]
}

/// Memory: idle, then with MEMORY_PRINCIPALS cached principals (in-process tier only).
async fn memory(bench: &Bench) -> Result<[Check; 2], Box<dyn std::error::Error>> {
    let server = bench.gate(1_000_000, &[], "memory").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = server.rss_bytes();
    let principals = if bench.lengths.quick {
        MEMORY_PRINCIPALS / 10
    } else {
        MEMORY_PRINCIPALS
    };
    let clients = loadgen::connect(server.port, 4).await?;
    let spec = LoadSpec::saturating(principals, 120);
    let source: RequestSource =
        Arc::new(|i| requests::encode(&requests::api_key(&common::bench_key(i + 1))));
    let filled = loadgen::run(&clients, &spec, source, Expect::Allow).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let full = server.rss_bytes();
    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
    eprintln!(
        "  idle {:.1} MiB, {} principals {:.1} MiB",
        mib(idle),
        filled.allows,
        mib(full)
    );
    Ok([
        Check::new(
            "Memory, idle (RSS)",
            format!("{:.1} MiB", mib(idle)),
            "<= 20 MB",
            idle <= 20_000_000,
        ),
        Check::new(
            &format!("Memory with {} cached principals (RSS)", filled.allows),
            format!("{:.1} MiB", mib(full)),
            "<= 64 MB with 100k",
            full <= 64_000_000 && filled.allows == principals,
        ),
    ])
}

/// Scale: database-miss p50 with 1M users and keys against 1k.
async fn scale(bench: &Bench, floor: &Scenario, checks: &mut Vec<Check>) -> Vec<Scenario> {
    let mut scale = Vec::new();
    for (users, name) in [
        (1_000u64, "db_miss_1k_users"),
        (1_000_000, "db_miss_1m_users"),
    ] {
        let server = bench.gate(users, &["--cache-ttl", "0"], name).await;
        // Keys spread over the whole table, in a shuffled order.
        let step = users / 1_000;
        let keys: Vec<_> = (0..1_000u64)
            .map(|i| requests::api_key(&common::bench_key(1 + (i * 7919 % 1_000) * step)))
            .collect();
        let spec = bench.lengths.paced(2_000.0, 5, 2, 16);
        let what = format!("database miss, {users} users, paced at 2,000/s");
        scale.push(
            bench
                .measure(
                    &server,
                    (name, &what),
                    1_000,
                    &spec,
                    cycle(keys),
                    Expect::Allow,
                )
                .await
                .against_floor(floor),
        );
    }
    let scale_ratio = scale[1].p50() / scale[0].p50();
    checks.push(Check::new(
        "Scale: database-miss p50, 1M users vs 1k",
        format!(
            "{:.0} µs vs {:.0} µs = {scale_ratio:.2}x",
            scale[1].p50(),
            scale[0].p50()
        ),
        "<= 1.2x",
        scale_ratio <= 1.2,
    ));
    scale
}

/// Redmine itself rejecting the wrong key of the `wrong` scenario, and how the gate compares;
/// `None` when Redmine does not answer.
async fn against_redmine(
    address: &str,
    floor: &Scenario,
    wrong: &Scenario,
) -> Option<(Scenario, Check)> {
    if !redmine::reachable(address).await {
        return None;
    }
    let result = redmine::run(address, "/users/current.json?key=wrong", 300, 4).await;
    let redmine = Scenario::new(
        "redmine_wrong_key",
        "Redmine 5.0.4 itself, ?key=wrong (HTTP/1.1, 4 in flight)",
        &result.histogram,
        result.elapsed.as_secs_f64(),
        result.unexpected,
    )
    .against_floor(floor);
    eprintln!(
        "  redmine {:.0}/s p50 {:.1} ms p99 {:.1} ms",
        redmine.per_second,
        redmine.p50() / 1000.0,
        redmine.p99() / 1000.0
    );
    let check = Check::new(
        "Gate vs Redmine, wrong API key",
        format!(
            "gate {:.0}/s vs Redmine {:.0}/s = {:.0}x throughput; p50 {:.0} µs vs {:.1} ms",
            wrong.per_second,
            redmine.per_second,
            wrong.per_second / redmine.per_second,
            wrong.p50(),
            redmine.p50() / 1_000.0
        ),
        "(reported)",
        true,
    );
    Some((redmine, check))
}

/// Valid cached keys paced at 2,000/s on their own connection, without and then during a
/// saturating flood of random invalid keys (closed loop, as the flood scenario).
async fn valid_in_flood(
    bench: &Bench,
    server: &Server,
    prefix: &str,
    hot_keys: &[CheckRequest],
    flood_answer: Expect,
) -> (Scenario, Scenario) {
    let valid = cycle(hot_keys.to_vec());
    let paced = bench.lengths.paced(2_000.0, 6, 1, 8);
    let alone = bench
        .measure(
            server,
            (
                &format!("{prefix}valid_paced_alone"),
                "cached valid keys at 2,000/s, no flood",
            ),
            2_000,
            &paced,
            valid.clone(),
            Expect::Allow,
        )
        .await;
    let flood_clients = loadgen::connect(server.port, 4).await.expect("connect");
    let flood_spec = LoadSpec {
        max_duration: paced.max_duration,
        ..bench.lengths.saturating(10_000_000, 8)
    };
    // From random addresses, as a botnet would: throttling, which stops a flood from one
    // address after its first failures, cannot help, so every key is looked up.
    let random: RequestSource = Arc::new(|_| requests::encode(&requests::flood_key()));
    let flooding = tokio::spawn(async move {
        loadgen::run(&flood_clients, &flood_spec, random, flood_answer).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = bench
        .measure(
            server,
            (
                &format!("{prefix}valid_paced_in_flood"),
                "cached valid keys at 2,000/s during the flood",
            ),
            0,
            &paced,
            valid,
            Expect::Allow,
        )
        .await;
    let flood_during = flooding.await.expect("flood");
    eprintln!("  flood alongside: {:.0}/s", flood_during.per_second());
    // The baseline again after the flood, keeping the run with the lower p99: a stall of
    // this VM during one baseline run made the ratio read 1.15x (a pass) where the runs
    // around it gave 2.9x and 3.8x. A stall rarely hits both runs.
    let again = bench
        .measure(
            server,
            (
                &format!("{prefix}valid_paced_alone"),
                "cached valid keys at 2,000/s, no flood (after it)",
            ),
            0,
            &paced,
            cycle(hot_keys.to_vec()),
            Expect::Allow,
        )
        .await;
    let alone = if again.p99() < alone.p99() {
        again
    } else {
        alone
    };
    (alone, during)
}

/// Polls pg_stat_activity for the gate's active queries (LISTEN excluded), keeping the most.
async fn sample_active_queries(url: String, most: Arc<AtomicI64>) {
    use sqlx::Connection as _;
    let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
        return;
    };
    loop {
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'redmine-authz' AND state = 'active' AND query NOT LIKE 'LISTEN%'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap_or(0);
        most.fetch_max(active, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Checks h2load (nghttp2) against our generator on the floor, with the same connections and
/// streams in flight: if both reach about the same rate, the server is what limits.
async fn h2load_check(server: &Server, floor: &Scenario, bench: &Bench) -> Option<String> {
    let h2load = procs::which("h2load")?;
    let body = bench.logs.join("check.grpc");
    std::fs::write(
        &body,
        requests::grpc_frame(&requests::api_key(&common::bench_key(1))),
    )
    .ok()?;
    let requests = if bench.lengths.quick {
        "40000"
    } else {
        "300000"
    };
    let url = format!(
        "http://127.0.0.1:{}/envoy.service.auth.v3.Authorization/Check",
        server.port
    );
    let output = std::process::Command::new("taskset")
        .args(["-c", "1"])
        .arg(h2load)
        .args(["-n", requests, "-c", "4", "-m", "8", "-t", "1", "-d"])
        .arg(&body)
        .args([
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            &url,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())?;
    let status = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or("")
        .to_owned();
    let note = format!(
        "Load generator check: h2load (4 connections x 8 streams, pre-framed Check body) reached {rate:.0} req/s on the floor; this generator {:.0} req/s (ratio {:.2}); h2load {status}",
        floor.per_second,
        floor.per_second / rate
    );
    eprintln!("  {note}");
    let _ = std::fs::write(bench.logs.join("h2load.txt"), text.as_bytes());
    Some(note)
}

/// The criterion estimates written earlier in the same run (mean, nanoseconds).
fn criterion_checks(dir: &Path) -> Vec<Check> {
    let estimate = |group: &str, bench: &str| -> Option<f64> {
        let text =
            std::fs::read_to_string(dir.join(group).join(bench).join("new/estimates.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["mean"]["point_estimate"].as_f64()
    };
    let mut checks = Vec::new();
    for bench in ["api_key_header", "api_key_query", "basic"] {
        if let Some(ns) = estimate("decision_core", bench) {
            checks.push(Check::new(
                &format!("Decision core alone ({bench}), criterion mean"),
                format!("{:.2} µs", ns / 1_000.0),
                "<= 2 µs",
                ns <= 2_000.0,
            ));
        }
    }
    for (bench, what) in [
        ("l1_hit", "L1 hit"),
        ("redis_hit", "Redis hit"),
        ("database_miss", "database miss"),
    ] {
        if let Some(ns) = estimate("cache_tier_lookup", bench) {
            checks.push(Check::new(
                &format!("One lookup, {what} (CachedDirectory::user_by_api_key), criterion mean"),
                format!("{:.1} µs", ns / 1_000.0),
                "(reported)",
                true,
            ));
        }
    }
    checks
}
