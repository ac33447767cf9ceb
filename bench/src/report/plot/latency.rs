//! Latency distributions: one CDF line per path, pinned and unpinned in two panels of one
//! file with the same x axis, so the two settings compare at a glance. The x axis is
//! logarithmic because the tail is one to two orders of magnitude above the median.

use plotters::prelude::*;

use super::bars::no_data;
use super::{path_color, FONT, LABEL_SIZE, TITLE_SIZE};
use crate::model::{PathKind, Report};
use crate::report::summary;

pub fn cdf(report: &Report) -> anyhow::Result<String> {
    // Per round the CDF points cannot be merged, so each line is the round with the median p50.
    let lines = |pinned: bool| -> Vec<(PathKind, &[(f64, f64)])> {
        PathKind::ALL
            .into_iter()
            .filter_map(|path| {
                let sample = summary::typical_latency_sample(report, path, pinned)?;
                Some((path, sample.cdf.as_slice()))
            })
            .collect()
    };
    let panels = [(true, lines(true)), (false, lines(false))];
    let xs = panels
        .iter()
        .flat_map(|(_, lines)| lines.iter().flat_map(|(_, points)| points.iter()))
        .map(|(x, _)| *x)
        .filter(|x| x.is_finite() && *x > 0.0);
    let (low, high) = xs.fold((f64::INFINITY, 0.0_f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let (low, high) = if low < high {
        (low / 1.25, high * 1.25)
    } else if high > 0.0 {
        (high / 2.0, high * 2.0)
    } else {
        (1.0, 1000.0)
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 960)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(
            "Round-trip latency of 64 B messages, CDF per path",
            (FONT, TITLE_SIZE),
        )?;
        for ((pinned, lines), area) in panels.iter().zip(root.split_evenly((2, 1))) {
            let caption = if *pinned {
                "pinned: client, backend and proxy on fixed CPUs"
            } else {
                "unpinned: placed by the scheduler"
            };
            let mut chart = ChartBuilder::on(&area)
                .caption(caption, (FONT, LABEL_SIZE + 3))
                .margin(16)
                .x_label_area_size(50)
                .y_label_area_size(70)
                .build_cartesian_2d(
                    (low..high)
                        .log_scale()
                        .with_key_points(log_ticks(low, high)),
                    0.0..1.0,
                )?;
            chart
                .configure_mesh()
                .x_label_formatter(&|x| tick_label(*x))
                .x_desc("round trip (µs, log scale)")
                .y_desc("fraction of round trips at or below")
                .label_style((FONT, LABEL_SIZE))
                .axis_desc_style((FONT, LABEL_SIZE))
                .draw()?;
            for (path, points) in lines {
                let color = path_color(*path);
                let points = points.iter().copied().filter(|(x, _)| *x > 0.0);
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                    .label(path.label())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            if lines.is_empty() {
                no_data(&area)?;
            } else {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::LowerRight)
                    .label_font((FONT, LABEL_SIZE))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()?;
            }
        }
        root.present()?;
    }
    Ok(svg)
}

/// Ticks at 1, 2, 5 × 10^k inside `low..high` (plotters' own log ticks crowd and overlap
/// near each power of ten); every integer multiple when that leaves too few.
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let ticks = |multiples: &[f64]| -> Vec<f64> {
        let first = low.log10().floor() as i32;
        let last = high.log10().ceil() as i32;
        (first..=last)
            .flat_map(|exponent| multiples.iter().map(move |m| m * 10f64.powi(exponent)))
            .filter(|x| (low..=high).contains(x))
            .collect()
    };
    let coarse = ticks(&[1.0, 2.0, 5.0]);
    if coarse.len() >= 4 {
        coarse
    } else {
        ticks(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// `20`, `0.2`: no float noise (`0.20000000000000004`) and no trailing zeros.
fn tick_label(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_one_two_five_or_denser_when_narrow() {
        assert_eq!(log_ticks(7.0, 250.0), vec![10.0, 20.0, 50.0, 100.0, 200.0]);
        assert_eq!(log_ticks(15.0, 60.0), vec![20.0, 30.0, 40.0, 50.0, 60.0]);
        assert_eq!(tick_label(20.0), "20");
        assert_eq!(tick_label(0.2 + 1e-17), "0.2");
    }
}
