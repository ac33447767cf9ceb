//! Number formatting and plain-text-friendly Markdown tables. Figures are printed to three
//! significant digits: the run-to-run spread of these benchmarks is a few percent, so more
//! digits would only be noise, and fewer would hide the small CPU costs of the splice.

use super::summary::Stat;

/// Shown wherever a path or workload has no data.
pub const MISSING: &str = "—";

/// `x` to three significant digits (`18.2`, `0.91`, `0.00123`, `12345`).
pub fn sig(x: f64) -> String {
    if !x.is_finite() {
        return MISSING.to_owned();
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 6) as usize;
    format!("{x:.decimals$}")
}

/// A median, or "—".
pub fn median(stat: Option<Stat>) -> String {
    stat.map_or_else(|| MISSING.to_owned(), |s| sig(s.median))
}

/// `min–max` of a stat, or "—"; one value when every round agreed.
pub fn range(stat: Option<Stat>) -> String {
    match stat {
        Some(s) if sig(s.min) == sig(s.max) => sig(s.min),
        Some(s) => format!("{}–{}", sig(s.min), sig(s.max)),
        None => MISSING.to_owned(),
    }
}

/// A byte count in the largest binary unit that keeps it ≥ 1 (`64 KiB`, `1 GiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = if value.fract() == 0.0 {
        format!("{value}")
    } else {
        sig(value)
    };
    format!("{text} {}", UNITS[unit])
}

/// Byte counts as `4 MiB and 16 MiB`, or "—" for none.
pub fn byte_list(sizes: &[u64]) -> String {
    if sizes.is_empty() {
        return MISSING.to_owned();
    }
    let names: Vec<String> = sizes.iter().map(|&size| bytes(size)).collect();
    names.join(" and ")
}

/// A ratio as `0.91×`.
pub fn times(ratio: f64) -> String {
    format!("{ratio:.2}×")
}

/// A signed difference as `+6.0` / `-1.2`.
pub fn signed(x: f64) -> String {
    let text = sig(x.abs());
    if x < 0.0 {
        format!("-{text}")
    } else {
        format!("+{text}")
    }
}

/// A Markdown table whose columns are padded to equal width, so the file reads as a table
/// in a terminal too.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |column: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
                .max(3)
        };
        let widths: Vec<usize> = (0..self.header.len()).map(width).collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let cell = cells.get(i).map_or("", String::as_str).replace('|', "\\|");
                    let pad = w.saturating_sub(cell.chars().count());
                    format!("{cell}{}", " ".repeat(pad))
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&self.header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_significant_digits() {
        assert_eq!(sig(18.234), "18.2");
        assert_eq!(sig(0.912), "0.912");
        assert_eq!(sig(0.001234), "0.00123");
        assert_eq!(sig(12345.6), "12346");
        assert_eq!(sig(0.0), "0");
        assert_eq!(sig(-2.5), "-2.50");
        assert_eq!(sig(f64::NAN), MISSING);
        assert_eq!(signed(6.0), "+6.00");
        assert_eq!(times(0.9123), "0.91×");
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(1 << 30), "1 GiB");
        assert_eq!(bytes(64 << 10), "64 KiB");
        assert_eq!(bytes(16 << 20), "16 MiB");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(100), "100 B");
        assert_eq!(byte_list(&[4 << 20, 16 << 20]), "4 MiB and 16 MiB");
        assert_eq!(byte_list(&[]), MISSING);
    }

    #[test]
    fn table_pads_columns() {
        let mut table = Table::new(&["path", "Gbit/s"]);
        table.row(vec!["direct".to_owned(), "20.0".to_owned()]);
        let text = table.render();
        assert_eq!(
            text,
            "| path   | Gbit/s |\n|--------|--------|\n| direct | 20.0   |\n"
        );
    }
}
