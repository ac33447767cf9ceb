//! The admin `/metrics` page: fetched over a plain socket and parsed from Prometheus text.

use std::{collections::BTreeSet, net::SocketAddr};

/// Label names and values, in page order.
pub type Labels = Vec<(String, String)>;

/// One sample line: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
    /// Names declared by `# TYPE` lines.
    pub families: BTreeSet<String>,
}

impl Metrics {
    /// `GET /metrics` from the admin listener at `admin`.
    pub fn fetch(admin: SocketAddr) -> Self {
        let (head, body) = crate::admin::get(admin, "/metrics");
        assert_eq!(
            head.status(),
            Some(200),
            "GET /metrics status; head:\n{}",
            head.text()
        );
        Self::parse(&String::from_utf8(body).expect("/metrics is UTF-8"))
    }

    /// Parses Prometheus (or OpenMetrics) text.
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        let mut families = BTreeSet::new();
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
            if let Some(declaration) = line.strip_prefix("# TYPE ") {
                families.extend(declaration.split_whitespace().next().map(str::to_owned));
            } else if !line.starts_with('#') {
                samples.push(
                    parse_sample(line)
                        .unwrap_or_else(|why| panic!("bad metrics line {line:?}: {why}")),
                );
            }
        }
        Self {
            text: text.to_owned(),
            samples,
            families,
        }
    }

    /// The value of the one sample of `name` whose labels include `labels`, or `None`.
    /// Panics if several samples match: the query is ambiguous.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matching = self.samples.iter().filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.iter().any(|(k, v)| k == key && v == value))
        });
        let first = matching.next()?;
        assert!(
            matching.next().is_none(),
            "several samples match {name}{labels:?}:\n{}",
            self.text
        );
        Some(first.value)
    }

    /// The value of `name{labels}`. A declared family without that label set reads as 0 (a
    /// Prometheus counter or gauge that was never touched); a family that is not declared at
    /// all panics, so a misspelled name cannot pass as zero.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.exported(name, labels)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`Self::metric`] for polling: a family that is not (yet) exported is an `Err`.
    pub fn exported(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
        if let Some(value) = self.get(name, labels) {
            return Ok(value);
        }
        let family = name.strip_suffix("_total").unwrap_or(name);
        let declared = self.families.contains(name)
            || self.families.contains(family)
            || self.samples.iter().any(|sample| sample.name == name);
        if declared {
            Ok(0.0)
        } else {
            Err(format!(
                "metric {name} is not exported; /metrics:\n{}",
                self.text
            ))
        }
    }
}

/// Parses `name{a="b",c="d"} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, rest) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, rest)
        }
        None => {
            let (name, rest) = line.split_once(' ').ok_or("no value")?;
            (name, Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        value => value.parse().map_err(|_| format!("bad value {value:?}"))?,
    };
    Ok(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

/// Parses `a="b",c="d"}` and returns the labels and what follows the closing brace.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (key, after) = text.split_once("=\"").ok_or("label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (at, '"') => break at,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, other) => value.push(other),
            }
        };
        labels.push((key.trim().to_owned(), value));
        text = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_client_text() {
        let metrics = Metrics::parse(
            "# HELP gateway_tunnels_opened Tunnels opened.\n\
             # TYPE gateway_tunnels_opened counter\n\
             gateway_tunnels_opened_total{mode=\"spliced\"} 3\n\
             # TYPE gateway_relayed_bytes counter\n\
             gateway_up 1\n\
             odd{a=\"x\\\"y\",b=\"2\"} 1.5e3\n\
             # EOF\n",
        );
        assert_eq!(
            metrics.metric("gateway_tunnels_opened_total", &[("mode", "spliced")]),
            3.0
        );
        assert_eq!(
            metrics.metric("gateway_tunnels_opened_total", &[("mode", "userspace")]),
            0.0
        );
        assert_eq!(
            metrics.metric("gateway_relayed_bytes_total", &[("direction", "x")]),
            0.0
        );
        assert_eq!(metrics.metric("gateway_up", &[]), 1.0);
        assert_eq!(metrics.metric("odd", &[("a", "x\"y")]), 1500.0);
    }

    #[test]
    #[should_panic(expected = "is not exported")]
    fn unknown_metric_panics() {
        Metrics::parse("gateway_up 1\n").metric("gateway_down", &[]);
    }
}
