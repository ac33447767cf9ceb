//! Renders a finished run: the `Report` itself as JSON (the record, from which everything
//! else can be redrawn), a Markdown summary with medians over rounds, ratios to direct and
//! the project's goals, and SVG plots. Each run gets its own time-stamped files, and the
//! `latest.*` copies give docs stable names to link to.

mod fmt;
mod markdown;
mod plot;
mod summary;
mod targets;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::model::Report;

/// Byte counts as the report writes them (`4 MiB`), for the run's progress lines too.
pub use self::fmt::bytes;

/// The files one `write` produced (the time-stamped ones; `latest.*` are copies).
pub struct Written {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub plots: Vec<PathBuf>,
}

/// Writes `<out>/<stamp>.json`, `<out>/<stamp>.md` and `<out>/<stamp>-*.svg` where stamp is
/// derived from `report.started_at` plus the preset name (`2026-11-24T03-10-00Z-quick`); also
/// (over)writes `<out>/latest.json`, `<out>/latest.md` and `<out>/latest-*.svg` so docs can
/// link stable names. The Markdown files end with links to the plots of the same prefix.
pub fn write(report: &Report, out: &Path) -> anyhow::Result<Written> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let json = serde_json::to_string_pretty(report).context("serialize the report")?;
    let text = markdown(report);
    let plots = plot::all(report).context("draw the plots")?;

    let stamp = stamp(report);
    // The stamped set first: if `latest.*` then fails, the run's own files are complete.
    let written = write_set(out, &stamp, &json, &text, &plots)?;
    write_set(out, "latest", &json, &text, &plots)?;
    Ok(written)
}

/// `<prefix>.json`, `<prefix>-<plot>.svg`, and `<prefix>.md` linking those plots.
fn write_set(
    out: &Path,
    prefix: &str,
    json: &str,
    text: &str,
    plots: &[plot::Plot],
) -> anyhow::Result<Written> {
    let file = |suffix: &str| out.join(format!("{prefix}{suffix}"));
    let json_path = file(".json");
    write_file(&json_path, json)?;
    let mut plot_paths = Vec::new();
    for plot in plots {
        let path = file(&format!("-{}.svg", plot.name));
        write_file(&path, &plot.svg)?;
        plot_paths.push(path);
    }
    let markdown_path = file(".md");
    write_file(&markdown_path, &with_plot_links(text, prefix, plots))?;
    Ok(Written {
        json: json_path,
        markdown: markdown_path,
        plots: plot_paths,
    })
}

/// The Markdown text alone (used by `write` and by docs generation); it links no plot,
/// since where the plots live depends on the caller.
pub fn markdown(report: &Report) -> String {
    markdown::render(report)
}

fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

fn with_plot_links(text: &str, prefix: &str, plots: &[plot::Plot]) -> String {
    let mut out = format!("{text}\n## Plots\n\n");
    for plot in plots {
        out.push_str(&format!("![{0}]({prefix}-{0}.svg)\n\n", plot.name));
    }
    out
}

/// `2026-11-24T03:10:00.123Z` + `quick` → `2026-11-24T03-10-00Z-quick`: whole seconds, and
/// only characters that are safe in file names everywhere (`:` is not, on Windows and in
/// some URL contexts).
fn stamp(report: &Report) -> String {
    let time = markdown::whole_seconds(&report.started_at);
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '+' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let time = if time.is_empty() {
        "unknown-time".to_owned()
    } else {
        safe(&time)
    };
    let preset = if report.plan.preset.is_empty() {
        "unknown-preset".to_owned()
    } else {
        safe(&report.plan.preset)
    };
    format!("{time}-{preset}")
}
