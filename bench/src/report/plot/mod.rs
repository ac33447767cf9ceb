//! SVG plots of a report, drawn with plotters.
//!
//! Text: plotters is built without its `ttf`/`ab_glyph` features, so it loads no font at
//! all. Layout uses plotters' built-in estimate of text width, and the SVG backend writes
//! every label as a `<text font-family="sans-serif">` element that the viewer (browser,
//! GitHub, an editor) renders with its own fonts. So plots need no font package on the
//! machine that runs the benchmark, and labels stay real, selectable text.

mod bars;
mod latency;

use plotters::style::RGBColor;

use crate::model::{Direction, PathKind, Report};

/// One rendered plot: `name` becomes the file name suffix (`<stamp>-<name>.svg`).
pub struct Plot {
    pub name: &'static str,
    pub svg: String,
}

/// Every plot of the report. All are always drawn, with a "no data" note where a workload
/// was not run, so the stable `latest-*.svg` names never point at a stale run.
pub fn all(report: &Report) -> anyhow::Result<Vec<Plot>> {
    Ok(vec![
        Plot {
            name: "throughput",
            svg: bars::throughput(report)?,
        },
        Plot {
            name: "latency",
            svg: latency::cdf(report)?,
        },
        Plot {
            name: "concurrent",
            svg: bars::concurrent_rss(report)?,
        },
    ])
}

/// Generic family for every label: resolved by the viewer, see the module comment.
const FONT: &str = "sans-serif";
const TITLE_SIZE: u32 = 26;
const LABEL_SIZE: u32 = 17;

/// A fixed color per path, the same in every plot.
fn path_color(path: PathKind) -> RGBColor {
    match path {
        PathKind::Direct => RGBColor(90, 90, 90),
        PathKind::GatewayEbpf => RGBColor(31, 119, 180),
        PathKind::GatewayUserspace => RGBColor(148, 103, 189),
        PathKind::Nginx => RGBColor(44, 160, 44),
        PathKind::Haproxy => RGBColor(255, 127, 14),
        PathKind::HaproxySplice => RGBColor(214, 39, 40),
    }
}

fn direction_color(direction: Direction) -> RGBColor {
    match direction {
        Direction::Upload => RGBColor(31, 119, 180),
        Direction::Download => RGBColor(255, 127, 14),
        Direction::Both => RGBColor(44, 160, 44),
    }
}
