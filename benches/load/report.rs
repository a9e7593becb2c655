//! Results: a JSON file, a markdown summary and an SVG chart of latency percentiles.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

/// The quantiles every scenario reports.
pub const QUANTILES: [(f64, &str); 4] =
    [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9")];

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub what: String,
    pub requests: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// p50, p90, p99, p99.9 in microseconds.
    pub micros: [f64; 4],
    pub max_micros: f64,
    /// Throughput and p99 relative to the floor measured in the same run.
    pub floor_rps_ratio: Option<f64>,
    pub floor_p99_ratio: Option<f64>,
    /// Share of the server's core it used while measured.
    pub server_cpu: Option<f64>,
    pub unexpected: u64,
    /// (quantile, microseconds) along the distribution, for the chart.
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
}

impl Scenario {
    pub fn new(
        name: &str,
        what: &str,
        histogram: &Histogram<u64>,
        seconds: f64,
        unexpected: u64,
    ) -> Self {
        let micros = QUANTILES.map(|(q, _)| histogram.value_at_quantile(q) as f64 / 1_000.0);
        let curve = (0..=80)
            .map(|step| {
                let x = step as f64 * 0.05; // log10(1 / (1 - q)), q from 0 to 99.99%
                let q = 1.0 - 10f64.powf(-x);
                (x, histogram.value_at_quantile(q) as f64 / 1_000.0)
            })
            .collect();
        Self {
            name: name.to_owned(),
            what: what.to_owned(),
            requests: histogram.len(),
            seconds,
            per_second: histogram.len() as f64 / seconds,
            micros,
            max_micros: histogram.max() as f64 / 1_000.0,
            floor_rps_ratio: None,
            floor_p99_ratio: None,
            server_cpu: None,
            unexpected,
            curve,
        }
    }

    pub fn p50(&self) -> f64 {
        self.micros[0]
    }

    pub fn p99(&self) -> f64 {
        self.micros[2]
    }

    pub fn against_floor(mut self, floor: &Scenario) -> Self {
        self.floor_rps_ratio = Some(self.per_second / floor.per_second);
        self.floor_p99_ratio = Some(self.p99() / floor.p99());
        self
    }
}

/// One target of the issue and how it came out.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub measured: String,
    pub target: String,
    pub pass: bool,
}

impl Check {
    pub fn new(what: &str, measured: String, target: &str, pass: bool) -> Self {
        Self {
            what: what.to_owned(),
            measured,
            target: target.to_owned(),
            pass,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: String,
    pub scenarios: Vec<Scenario>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
}

fn ms(micros: f64) -> String {
    if micros >= 1_000.0 {
        format!("{:.2} ms", micros / 1_000.0)
    } else {
        format!("{micros:.0} µs")
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "Machine: {}\n", self.machine);
        md.push_str("| scenario | what | req/s | × floor req/s | p50 | p90 | p99 | p99.9 | × floor p99 | server core busy | unexpected answers |\n");
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for s in &self.scenarios {
            let ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "–".into());
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.name,
                s.what,
                s.per_second,
                ratio(s.floor_rps_ratio),
                ms(s.micros[0]),
                ms(s.micros[1]),
                ms(s.micros[2]),
                ms(s.micros[3]),
                ratio(s.floor_p99_ratio),
                s.server_cpu
                    .map(|c| format!("{:.0}%", c * 100.0))
                    .unwrap_or_else(|| "–".into()),
                s.unexpected,
            );
        }
        md.push_str("\n| target | measured | wanted | result |\n|---|---|---|---|\n");
        for c in &self.checks {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                c.what,
                c.measured,
                c.target,
                if c.pass { "pass" } else { "**miss**" }
            );
        }
        if !self.notes.is_empty() {
            md.push('\n');
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        md
    }

    pub fn write(&self, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join("summary.md"), self.markdown())?;
        chart(&self.scenarios, &dir.join("latency.svg"))?;
        Ok(())
    }
}

/// Latency by percentile, one line per scenario, both axes logarithmic in effect: the x axis
/// is log10(1 / (1 - q)), so 90%, 99%, 99.9% and 99.99% are evenly spaced.
pub fn chart(scenarios: &[Scenario], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1100, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (min, max) = scenarios
        .iter()
        .flat_map(|s| s.curve.iter().map(|(_, y)| *y))
        .fold((f64::MAX, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (min, max) = (min.max(1.0) * 0.8, max.max(2.0) * 1.25);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "redmine-authz: Check latency by percentile (server on one core; closed loop unless paced)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..4f64, (min..max).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|x| {
            let q = (1.0 - 10f64.powf(-x)) * 100.0;
            if q <= 0.0 {
                "min".to_owned()
            } else {
                format!("p{}", trim(q))
            }
        })
        .y_label_formatter(&|y| ms(*y))
        .x_desc("percentile")
        .y_desc("latency (log scale)")
        .draw()?;
    for (i, scenario) in scenarios.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                scenario.curve.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(format!(
                "{}: p50 {} · p99 {} · {:.0}/s",
                scenario.name,
                ms(scenario.p50()),
                ms(scenario.p99()),
                scenario.per_second
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

fn trim(percent: f64) -> String {
    let text = format!("{percent:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
