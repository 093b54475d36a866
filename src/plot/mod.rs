//! `dtaas plot`: a PNG or SVG of stored series from the historian (`ts.query`), with a
//! DT's anomaly periods shaded. Without `--series` it draws the incubator demo: box
//! temperature measured and estimated, the estimated heater temperature, the setpoint
//! and the room.

mod data;
mod draw;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use dtaas_runtime::Config;

pub use data::SeriesSpec;

/// Options of `dtaas plot`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct PlotArgs {
    /// Output file; `.png` or `.svg` decides the format.
    #[arg(short, long, default_value = "incubator.png")]
    pub output: PathBuf,
    /// A series as PT/MEASUREMENT/FIELD[=LABEL] (a DT's outputs: DT/OUTPUT/FIELD);
    /// repeat for more [default: the incubator demo's series of --pt and --dt].
    #[arg(long = "series", value_name = "PT/MEASUREMENT/FIELD[=LABEL]")]
    pub series: Vec<SeriesSpec>,
    /// PT of the default series.
    #[arg(long, default_value = "inc1")]
    pub pt: String,
    /// DT whose outputs are plotted by default and whose anomaly periods are shaded.
    #[arg(long, default_value = "incubator")]
    pub dt: String,
    /// How much data to show, ending at the newest point (data time, e.g. 30m, 2h).
    #[arg(long, default_value = "30m", value_parser = parse_span)]
    pub last: Duration,
    /// Start of the range instead (RFC 3339); with --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// End of the range (RFC 3339); with --from.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Title [default: the PT and DT].
    #[arg(long)]
    pub title: Option<String>,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 1200)]
    pub width: u32,
    #[arg(long, default_value_t = 650)]
    pub height: u32,
}

fn parse_span(text: &str) -> anyhow::Result<Duration> {
    let ns = dtaas_schemas::time::parse_duration_ns(text)?;
    if ns <= 0 {
        anyhow::bail!("{text:?} must be longer than zero");
    }
    Ok(Duration::from_nanos(ns as u64))
}

pub async fn run(args: PlotArgs, config: &Config) -> anyhow::Result<()> {
    let client = dtaas_runtime::nats::connect(config, "dtaas-plot").await?;
    let specs = if args.series.is_empty() {
        SeriesSpec::incubator(&args.pt, &args.dt)
    } else {
        args.series.clone()
    };
    let range = data::Range::new(args.from.as_deref(), args.to.as_deref(), args.last)?;
    let plot = data::load(&client, &config.user, &specs, &args.dt, &range).await?;
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| format!("PT {} and DT {}", args.pt, args.dt));
    draw::render(&args.output, (args.width, args.height), &title, &plot)?;
    println!(
        "{}: {} series, {} points, {} anomaly period(s)",
        args.output.display(),
        plot.series.len(),
        plot.series.iter().map(|s| s.points.len()).sum::<usize>(),
        plot.shaded.len()
    );
    Ok(())
}
