//! The daemon's readiness line, printed once on stdout when it accepts connections:
//! `gateway ready listen=http://127.0.0.1:8080 admin=http://127.0.0.1:9090 dataplane=ebpf`
//! (`admin=-` when there is no admin endpoint; several listeners are joined by `,`).
//! Keys we do not know are ignored.
use std::fmt;

const PREFIX: &str = "gateway ready";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Base URLs clients connect to, e.g. `http://127.0.0.1:8080`; at least one.
    pub listen: Vec<String>,
    /// Base URL of the admin endpoint, if there is one.
    pub admin: Option<String>,
    pub dataplane: Dataplane,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataplane {
    Ebpf,
    Userspace,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadinessError {
    #[error("readiness line lacks `{0}=`")]
    MissingKey(&'static str),
    #[error("readiness line has `{0}`, expected key=value")]
    NotKeyValue(String),
    #[error("readiness line has dataplane={0}, expected ebpf or userspace")]
    UnknownDataplane(String),
}

/// `Ok(None)` for any other line; `Err` for a readiness line that breaks the contract.
pub fn parse(line: &str) -> Result<Option<Ready>, ReadinessError> {
    let Some(rest) = line.trim_end().strip_prefix(PREFIX) else {
        return Ok(None);
    };
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return Ok(None);
    }
    let (mut listen, mut admin, mut dataplane) = (None, None, None);
    for token in rest.split_whitespace() {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| ReadinessError::NotKeyValue(token.to_owned()))?;
        match key {
            "listen" => listen = Some(value.split(',').map(str::to_owned).collect::<Vec<_>>()),
            "admin" => admin = Some((value != "-").then(|| value.to_owned())),
            "dataplane" => dataplane = Some(parse_dataplane(value)?),
            _ => {}
        }
    }
    Ok(Some(Ready {
        listen: listen
            .filter(|urls| urls.iter().all(|url| !url.is_empty()))
            .ok_or(ReadinessError::MissingKey("listen"))?,
        admin: admin.ok_or(ReadinessError::MissingKey("admin"))?,
        dataplane: dataplane.ok_or(ReadinessError::MissingKey("dataplane"))?,
    }))
}

fn parse_dataplane(value: &str) -> Result<Dataplane, ReadinessError> {
    match value {
        "ebpf" => Ok(Dataplane::Ebpf),
        "userspace" => Ok(Dataplane::Userspace),
        other => Err(ReadinessError::UnknownDataplane(other.to_owned())),
    }
}

impl fmt::Display for Dataplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dataplane::Ebpf => "ebpf",
            Dataplane::Userspace => "userspace",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_line_is_parsed() {
        let line = "gateway ready listen=http://127.0.0.1:8080 admin=http://127.0.0.1:9090 \
                    dataplane=ebpf\n";
        let ready = parse(line).expect("valid line").expect("a readiness line");
        assert_eq!(
            ready,
            Ready {
                listen: vec!["http://127.0.0.1:8080".into()],
                admin: Some("http://127.0.0.1:9090".into()),
                dataplane: Dataplane::Ebpf,
            }
        );
    }

    #[test]
    fn dash_means_no_admin_and_order_and_unknown_keys_do_not_matter() {
        let line = "gateway ready dataplane=userspace version=1 admin=- \
                    listen=http://[::1]:80,http://127.0.0.1:81";
        let ready = parse(line).expect("valid line").expect("a readiness line");
        assert_eq!(ready.admin, None);
        assert_eq!(ready.dataplane, Dataplane::Userspace);
        assert_eq!(ready.listen, ["http://[::1]:80", "http://127.0.0.1:81"]);
    }

    #[test]
    fn other_lines_are_not_readiness() {
        for line in [
            "",
            "gateway starting",
            "gateway readyx listen=a",
            " gateway ready",
        ] {
            assert_eq!(parse(line), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn broken_readiness_lines_are_errors() {
        assert_eq!(
            parse("gateway ready admin=- dataplane=ebpf"),
            Err(ReadinessError::MissingKey("listen"))
        );
        assert_eq!(
            parse("gateway ready listen= admin=- dataplane=ebpf"),
            Err(ReadinessError::MissingKey("listen"))
        );
        assert_eq!(
            parse("gateway ready listen=x admin=- dataplane=xdp"),
            Err(ReadinessError::UnknownDataplane("xdp".into()))
        );
        assert_eq!(
            parse("gateway ready listen=x admin - dataplane=ebpf"),
            Err(ReadinessError::NotKeyValue("admin".into()))
        );
    }
}
