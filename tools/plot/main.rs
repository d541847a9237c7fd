//! chronik-plot: draws latency-by-percentile curves from HdrHistogram percentile files
//! (`.hgrm`, as `chronik-load --histogram-dir` writes them) into one SVG, the usual
//! HdrHistogram picture: percentiles on a log scale of 1/(1-p), so the tail gets the room.
//!
//! ```sh
//! chronik-plot --out latency.svg --title "acks=all, 1 KiB" "25%=h25/produce.hgrm" "50%=h50/produce.hgrm"
//! ```

use std::path::PathBuf;

use clap::Parser;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

#[derive(Parser, Debug)]
#[command(
    name = "chronik-plot",
    about = "Latency-by-percentile plots of .hgrm files"
)]
struct Args {
    /// The SVG to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "latency by percentile")]
    title: String,
    /// Latency on a log scale (for curves of very different heights).
    #[arg(long)]
    log_y: bool,
    /// Curves, each `label=path.hgrm`.
    #[arg(required = true)]
    curves: Vec<String>,
}

/// The rightmost percentile drawn: 99.999%.
const INVERSE_MAX: f64 = 100_000.0;

/// (1/(1-percentile), milliseconds) points of a percentile file.
fn read_curve(path: &PathBuf) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let points = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let value: f64 = fields.next()?.parse().ok()?;
            let percentile: f64 = fields.next()?.parse().ok()?;
            let inverse = (1.0 / (1.0 - percentile)).min(INVERSE_MAX);
            Some((inverse, value))
        })
        .collect::<Vec<_>>();
    anyhow::ensure!(
        !points.is_empty(),
        "{} holds no percentiles",
        path.display()
    );
    Ok(points)
}

/// "99.9%" for 1000.
fn percentile_label(inverse: f64) -> String {
    let percent = 100.0 * (1.0 - 1.0 / inverse);
    let digits = (inverse.log10().round() as usize).saturating_sub(2);
    format!("{percent:.digits$}%")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let curves = args
        .curves
        .iter()
        .map(|spec| {
            let (label, path) = spec
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("a curve is label=path.hgrm, not {spec}"))?;
            Ok((label.to_string(), read_curve(&PathBuf::from(path))?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let values = || {
        curves
            .iter()
            .flat_map(|(_, points)| points.iter().map(|p| p.1))
    };
    let highest = values().fold(0.0f64, f64::max);
    if args.log_y {
        // Log scale: curves of very different heights stay readable side by side.
        let lowest = values().fold(f64::MAX, f64::min).max(0.01);
        draw(&args, curves, (lowest * 0.8..highest * 1.25).log_scale())
    } else {
        draw(&args, curves, 0.0..highest * 1.1)
    }
}

type Curves = Vec<(String, Vec<(f64, f64)>)>;

/// The chart: percentiles across (log scale), latency up (`y`: a linear or log range).
fn draw<Y>(args: &Args, curves: Curves, y: Y) -> anyhow::Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = SVGBackend::new(&args.out, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&args.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0..INVERSE_MAX).log_scale(), y)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc(if args.log_y {
            "latency (ms, log scale)"
        } else {
            "latency (ms)"
        })
        .x_label_formatter(&|inverse| percentile_label(*inverse))
        .light_line_style(TRANSPARENT)
        .draw()?;
    for (index, (label, points)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(index).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points, color))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
