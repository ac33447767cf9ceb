//! Grouped bar charts: bulk throughput per path and direction, and proxy memory per tunnel
//! per tunnel count. Bars are medians over rounds; whiskers span min–max, so a noisy
//! result is visible in the picture and not only in the tables.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;

use super::{direction_color, path_color, FONT, LABEL_SIZE, TITLE_SIZE};
use crate::model::{Direction, PathKind, Report};
use crate::report::summary::{self, Stat};

/// One bar per group, in one color, named in the legend.
struct Series {
    label: String,
    color: RGBColor,
    /// One per group; `None` draws no bar.
    values: Vec<Option<Stat>>,
}

struct Chart<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    groups: Vec<String>,
    series: Vec<Series>,
}

pub fn throughput(report: &Report) -> anyhow::Result<String> {
    let paths: Vec<PathKind> = PathKind::ALL
        .into_iter()
        .filter(|p| report.bulk.iter().any(|s| s.path == *p))
        .collect();
    let title = format!(
        "Bulk throughput, one stream (median of {} rounds, whiskers min-max)",
        report.plan.rounds
    );
    draw(&Chart {
        title: &title,
        x_desc: "path",
        y_desc: "throughput (Gbit/s)",
        groups: paths.iter().map(|p| p.label().to_owned()).collect(),
        series: Direction::ALL
            .into_iter()
            .map(|direction| Series {
                label: direction.label().to_owned(),
                color: direction_color(direction),
                values: paths
                    .iter()
                    .map(|p| summary::bulk_gbps(report, *p, direction))
                    .collect(),
            })
            .collect(),
    })
}

pub fn concurrent_rss(report: &Report) -> anyhow::Result<String> {
    let rows = summary::concurrent(report);
    let mut counts: Vec<usize> = rows.iter().map(|r| r.requested).collect();
    counts.dedup(); // rows are sorted by count
    let proxies = PathKind::ALL
        .into_iter()
        .filter(|p| p.is_proxy() && rows.iter().any(|r| r.path == *p));
    draw(&Chart {
        title: "Proxy memory per open tunnel (median over rounds, whiskers min-max)",
        x_desc: "tunnels asked for",
        y_desc: "proxy RSS per tunnel (KiB)",
        groups: counts.iter().map(usize::to_string).collect(),
        series: proxies
            .map(|path| Series {
                label: path.label().to_owned(),
                color: path_color(path),
                values: counts
                    .iter()
                    .map(|count| {
                        rows.iter()
                            .find(|r| r.requested == *count && r.path == path)
                            .and_then(|r| r.rss_per_tunnel_kib)
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn draw(chart: &Chart<'_>) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let top = chart
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .map(|v| v.max)
            .fold(0.0, f64::max);
        // Headroom so the legend, upper right, does not cover the tallest bars.
        let y_max = if top > 0.0 { top * 1.45 } else { 1.0 };
        let groups = chart.groups.len().max(1);
        let mut plot = ChartBuilder::on(&root)
            .caption(chart.title, (FONT, TITLE_SIZE))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(GroupAxis(groups), 0.0..y_max)?;
        let group_label = |x: &f64| {
            let index = (*x - 0.5).round();
            if index >= 0.0 {
                chart
                    .groups
                    .get(index as usize)
                    .cloned()
                    .unwrap_or_default()
            } else {
                String::new()
            }
        };
        plot.configure_mesh()
            .disable_x_mesh()
            .x_desc(chart.x_desc)
            .y_desc(chart.y_desc)
            .x_label_formatter(&group_label)
            .label_style((FONT, LABEL_SIZE))
            .axis_desc_style((FONT, LABEL_SIZE))
            .draw()?;

        // Bars fill 80% of a group, side by side in series order.
        let width = 0.8 / chart.series.len().max(1) as f64;
        for (j, series) in chart.series.iter().enumerate() {
            let color = series.color;
            let bars = series.values.iter().enumerate().filter_map(|(i, value)| {
                let left = i as f64 + 0.1 + j as f64 * width;
                value.map(|v| {
                    Rectangle::new([(left, 0.0), (left + width, v.median)], color.filled())
                })
            });
            plot.draw_series(bars)?
                .label(series.label.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
            let whiskers = series.values.iter().enumerate().filter_map(|(i, value)| {
                let center = i as f64 + 0.1 + (j as f64 + 0.5) * width;
                value.filter(|v| v.max > v.min).map(|v| {
                    ErrorBar::new_vertical(center, v.min, v.median, v.max, BLACK.stroke_width(1), 8)
                })
            });
            plot.draw_series(whiskers)?;
        }
        if chart
            .series
            .iter()
            .all(|s| s.values.iter().all(Option::is_none))
        {
            no_data(&root)?;
        } else {
            plot.configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, LABEL_SIZE))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// An x axis of `n` groups, each one unit wide, with one tick in the middle of each so the
/// group's name sits under its bars (plotters' own `f64` axis puts ticks at round numbers).
struct GroupAxis(usize);

impl Ranged for GroupAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, (low, high): (i32, i32)) -> i32 {
        low + (f64::from(high - low) * value / self.0 as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            (0..self.0).map(|i| i as f64 + 0.5).collect()
        }
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0 as f64
    }
}

/// A centered note for a plot whose workload was not run.
pub(super) fn no_data<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (width, height) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, TITLE_SIZE).into_font())
        .color(&RGBColor(120, 120, 120))
        .pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Center,
        ));
    area.draw(&Text::new(
        "no data in this run",
        (width as i32 / 2, height as i32 / 2),
        style,
    ))
}
